"""A tiny class-conditional digits run end to end: shapes, guidance plumbing, metrics that
order real held-out images above noise, the classifier cache, and the CLI."""

import json

import numpy as np
import pytest

from physdiff.cli import main
from physdiff.config import config_from_dict
from physdiff.data.images import load_digits
from physdiff.evaluation.images import evaluate as evaluate_images
from physdiff.evaluation.images import figures as image_figures
from physdiff.run import LoadedRun
from physdiff.training import train

TINY = {"data": {"dataset": "digits"},
        "diffusion": {"timesteps": 50},
        "model": {"channels": 8, "time_dim": 16},
        "train": {"steps": 40, "batch_size": 32, "device": "cpu", "checkpoint_every": 20}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache):
    mp = pytest.MonkeyPatch()
    mp.setenv("PHYSDIFF_CACHE", str(cache))
    out = train(config_from_dict(TINY), tmp_path_factory.mktemp("img") / "run", progress=False)
    yield LoadedRun(out)
    mp.undo()


def test_image_defaults_apply_to_keys_left_out():
    cfg = config_from_dict({"data": {"dataset": "digits"}, "train": {"lr": 5e-4}})
    assert cfg.diffusion.clip_x0 == 1.0 and cfg.train.batch_size == 128 and cfg.train.lr == 5e-4
    assert config_from_dict({}).train.batch_size == 512  # vectors keep theirs


def test_run_is_conditional_and_samples_in_unit_range(run):
    assert run.data_shape == (1, 8, 8) and run.class_names == tuple("0123456789")
    x = run.sample(12, 0, sampler="ddim", steps=5, classes=3, guidance=2.0).samples
    assert x.shape == (12, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    # guidance plumbing: w changes the samples, w = 0 is the conditional model, same noise
    a = run.sample(4, 1, sampler="ddim", steps=5, classes=[0, 1, 2, 3], guidance=0.0).samples
    b = run.sample(4, 1, sampler="ddim", steps=5, classes=[0, 1, 2, 3], guidance=3.0).samples
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(run.labels(np.arange(12)), np.arange(12) % 10)
    # sample i does not depend on the batch it was drawn in, labels included
    c = run.sample(130, 2, sampler="ddim", steps=3, batch_size=64).samples
    d = run.sample(30, 2, sampler="ddim", steps=3, start=100).samples
    np.testing.assert_allclose(c[100:], d, atol=1e-6)


def test_metrics_order_real_images_above_noise(run, cache, monkeypatch):
    """Held-out real images (arranged so image i has class i mod 10) must beat uniform noise
    on every metric; and real images reach the floors."""
    monkeypatch.setenv("PHYSDIFF_CACHE", str(cache))
    data = load_digits()
    by_class = [data.test_x[data.test_y == k] for k in range(10)]
    m = min(len(b) for b in by_class)
    good = np.stack([by_class[i % 10][i // 10] for i in range(10 * m)])
    bad = np.random.default_rng(0).random(good.shape).astype(np.float32)
    rg = evaluate_images(run, len(good), samples=good)["metrics"]
    rb = evaluate_images(run, len(bad), samples=bad)["metrics"]
    assert rg["fcd"]["value"] < 0.2 * rb["fcd"]["value"]
    assert rg["precision"]["value"] > 0.8 > 0.4 > rb["precision"]["value"]
    assert rg["recall"]["value"] > rb["recall"]["value"]
    assert rg["conditional_accuracy"]["value"] > 0.9 and rb["conditional_accuracy"]["value"] < 0.5
    assert rg["conditional_accuracy"]["floor"] > 0.95  # the classifier's test accuracy
    assert rg["memorisation_share"]["value"] < 0.05
    copies = evaluate_images(run, 200, samples=data.train_x[:200])["metrics"]
    assert copies["memorisation_share"]["value"] == 1.0


def test_classifier_is_cached(cache, monkeypatch):
    from physdiff import classifier

    monkeypatch.setenv("PHYSDIFF_CACHE", str(cache))
    data = load_digits()
    classifier.load_or_train(data)  # trained by now (or here)
    monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: pytest.fail("retrained"))
    _, acc = classifier.load_or_train(data)
    assert acc > 0.95


def test_image_figures(run, cache, monkeypatch):
    monkeypatch.setenv("PHYSDIFF_CACHE", str(cache))
    figs = image_figures(run, 0, sampler_args={"sampler": "ddim", "steps": 5}, per_class=3)
    assert set(figs) == {"samples.png", "reverse.png", "guidance.png", "nearest.png"}
    for fig in figs.values():
        assert fig.axes[0].get_title() or fig._suptitle is not None


def test_cli_image_run(run, tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setenv("PHYSDIFF_CACHE", str(cache))
    out, png = tmp_path / "s.npy", tmp_path / "s.png"
    assert main(["sample", str(run.path), "--n", "8", "--class", "7", "--guidance", "2", "--sampler", "ddim",
                 "--steps", "4", "--out", str(out), "--png", str(png), "--device", "cpu"]) == 0
    assert np.load(out).shape == (8, 1, 8, 8) and png.stat().st_size > 0
    capsys.readouterr()
    assert main(["evaluate", str(run.path), "--n", "100", "--sampler", "ddim", "--steps", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"fcd", "precision", "recall", "memorisation_share", "conditional_accuracy"} <= set(report["metrics"])
    assert report["guidance"] == 0.5
    for argv, words in (
            (["sample", str(run.path), "--class", "10", "--out", str(tmp_path / "n.npy")], "class 10 is out of range"),
            (["sample", str(run.path), "--n", "4", "--out", str(tmp_path / "n.npy"), "--png", str(tmp_path / "x.jpg")],
             "--png"),
            (["sample", str(run.path), "--n", "4", "--out", str(out)], "already exists; pass overwrite=True"),
            (["evaluate", str(run.path), "--nll"], "is for vector data, not for image runs")):
        assert main(argv) == 2
        assert words in capsys.readouterr().err


def test_cli_refuses_bad_image_input(tmp_path, capsys):
    cases = [
        (["train", "--dataset", "mnist", "--out", str(tmp_path / "a")], "needs data.folder"),
        (["train", "--dataset", "mnist", "--folder", str(tmp_path / "none"), "--out", str(tmp_path / "b")],
         "does not exist"),
        (["train", "--dataset", "digts", "--out", str(tmp_path / "c")], "did you mean 'digits'"),
    ]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_train_on_idx_and_png_folders(tmp_path, monkeypatch):
    """The loaders feed training: a small MNIST-format folder (conditional, 28×28, odd 7×7 lowest
    level) and an unlabelled PNG folder (unconditional; evaluation falls back to pixel features)."""
    from matplotlib.image import imsave

    from test_images import make_idx_folder

    monkeypatch.setenv("PHYSDIFF_CACHE", str(tmp_path / "cache"))
    make_idx_folder(tmp_path / "mnist", n_train=40, n_test=20, gz=True)
    fast = {"diffusion": {"timesteps": 20}, "model": {"channels": 8, "time_dim": 16},
            "train": {"steps": 3, "batch_size": 8, "device": "cpu"}}
    run = LoadedRun(train(config_from_dict({"data": {"dataset": "mnist", "folder": str(tmp_path / "mnist")}} | fast),
                          tmp_path / "r1", progress=False))
    assert run.data_shape == (1, 28, 28) and run.num_classes == 10
    x = run.sample(3, 0, sampler="ddim", steps=2, classes=[1, 2, 3]).samples
    assert x.shape == (3, 1, 28, 28)

    rng = np.random.default_rng(0)
    (tmp_path / "png").mkdir()
    for i in range(30):
        imsave(tmp_path / "png" / f"{i:02d}.png", rng.random((6, 6)), cmap="gray", vmin=0, vmax=1)
    run = LoadedRun(train(config_from_dict({"data": {"dataset": "images", "folder": str(tmp_path / "png")}} | fast),
                          tmp_path / "r2", progress=False))
    assert run.data_shape == (1, 6, 6) and run.num_classes == 0
    report = evaluate_images(run, 27, sampler_args={"sampler": "ddim", "steps": 2})
    assert report["feature_space"] == "pixels" and "conditional_accuracy" not in report["metrics"]

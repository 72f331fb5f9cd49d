"""A user's data file: the held-out validation split (drawn by data.seed, recorded in the run),
the validation loss, evaluate against the held-out rows with a memorisation check, errors of
value/floor ratios, and training from an array in memory."""

import numpy as np
import pytest
import torch

from conftest import one_line_error
from physdiff import checkpoint as ck
from physdiff.checkpoint import read_metrics
from physdiff.cli import main
from physdiff.config import CONFIG_VERSION, Config, config_from_dict, load_config
from physdiff.data import load_array, split_rows, validation_indices
from physdiff.errors import PhysdiffError
from physdiff.run import LoadedRun
from physdiff.training import VALIDATION_COLUMN, train

TINY = {"train.steps": 60, "train.log_every": 20, "train.checkpoint_every": 60, "model.width": 16,
        "model.depth": 1, "diffusion.timesteps": 50, "train.batch_size": 64, "train.device": "cpu"}


def points(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)) * [3.0, 0.5] + [1.0, -2.0]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "points.npy"
    np.save(path, points())
    return path


@pytest.fixture(scope="module")
def file_run(tmp_path_factory, data_file):
    return train(Config().with_overrides(TINY), tmp_path_factory.mktemp("runs") / "file", data=data_file,
                 progress=False)


def test_split_is_drawn_by_the_seed_and_recorded(file_run, data_file):
    """validation.npy holds round(0.1 N) distinct rows, those validation_indices draws from
    data.seed; the training rows are the rest, and the normaliser is fitted on them only."""
    cfg = load_config(file_run / ck.CONFIG_FILE)
    assert cfg.data.validation_fraction == 0.1
    held = np.load(file_run / ck.VALIDATION_FILE)
    assert held.dtype == np.int64 and len(held) == 40 == len(np.unique(held))
    np.testing.assert_array_equal(held, validation_indices(400, 0.1, cfg.data.seed))
    assert not np.array_equal(held, validation_indices(400, 0.1, cfg.data.seed + 1))
    train_rows, _ = split_rows(load_array(data_file), held)
    assert len(train_rows) == 360
    run = LoadedRun(file_run, device="cpu")
    np.testing.assert_allclose(run.normalizer.shift.numpy(), train_rows.mean(0), rtol=1e-12)
    assert not np.allclose(run.normalizer.shift.numpy(), load_array(data_file).mean(0), rtol=1e-6)


def test_validation_loss_is_logged_and_finite(file_run):
    rows, skipped = read_metrics(file_run / ck.METRICS_FILE)
    assert skipped == 0 and VALIDATION_COLUMN in rows
    assert list(rows["step"]) == [20, 40, 60]
    val = rows[VALIDATION_COLUMN]
    assert np.isfinite(val).all() and (val > 0).all()
    # the objective on data the network never saw, at fixed draws: the same order as the training loss
    assert 0.2 < val[-1] / rows["loss"][-1] < 5


def test_validation_loss_uses_fixed_draws(file_run):
    """Two calls on the same weights give the same number (fixed t and noise), and the
    training generator is untouched."""
    from physdiff.training import Trainer

    cfg = load_config(file_run / ck.CONFIG_FILE)
    trainer = Trainer.create(cfg, file_run, torch.device("cpu"), held_out=np.load(file_run / ck.VALIDATION_FILE))
    from physdiff.objective import DenoisingLoss
    from physdiff.schedule import make_schedule

    objective = DenoisingLoss(make_schedule("linear", 50, warn=False), "v")
    state = trainer.generator.get_state()
    assert trainer.validation_loss(objective) == trainer.validation_loss(objective)
    assert torch.equal(trainer.generator.get_state(), state)


def test_resume_continues_on_the_recorded_split(tmp_path, data_file):
    """A resumed run trains on the rows validation.npy names and writes the val_loss column."""
    cfg = Config().with_overrides(TINY | {"train.steps": 40, "train.checkpoint_every": 20})
    out = train(cfg, tmp_path / "r", data=data_file, progress=False)
    train(None, out, resume=True, steps=60, progress=False)
    rows, _ = read_metrics(out / ck.METRICS_FILE)
    assert list(rows["step"]) == [20, 40, 60] and np.isfinite(rows[VALIDATION_COLUMN]).all()
    (out / ck.VALIDATION_FILE).unlink()
    with pytest.raises(PhysdiffError, match=r"validation.npy.*missing"):
        train(None, out, resume=True, steps=80, progress=False)


def test_old_configs_held_nothing_out():
    """config.toml of version <= 5 has no validation_fraction: read as 0 (those runs trained on
    every row, and evaluate compares them with halves of the file as before)."""
    assert config_from_dict({"version": 5, "data": {"file": "x.npy"}}).data.validation_fraction == 0.0
    assert config_from_dict({"data": {"file": "x.npy"}}).data.validation_fraction == 0.1
    with pytest.raises(PhysdiffError, match=r"validation_fraction = 0.7 is out of range"):
        config_from_dict({"data": {"validation_fraction": 0.7}})


def test_fraction_zero_holds_nothing_out(tmp_path, data_file):
    out = train(Config().with_overrides(TINY | {"data.validation_fraction": 0.0}), tmp_path / "r", data=data_file,
                progress=False)
    assert not (out / ck.VALIDATION_FILE).exists()
    rows, _ = read_metrics(out / ck.METRICS_FILE)
    assert VALIDATION_COLUMN not in rows


def test_too_few_rows_for_a_split_is_one_line(tmp_path, capsys):
    data = tmp_path / "few.npy"
    np.save(data, points(17))
    err = one_line_error(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--steps", "5"])
    assert "17 rows" in err and "data.validation_fraction = 0" in err
    assert not (tmp_path / "r").exists()
    err = one_line_error(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "r"),
                                  "--validation-fraction", "0.9"])
    assert "0.9" in err and "<= 0.5" in err and not (tmp_path / "r").exists()
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--steps", "5", "--width", "8",
                 "--timesteps", "20", "--batch-size", "16", "--validation-fraction", "0"]) == 0


# ---------------------------------------------------------------- evaluate on held-out rows


def test_evaluate_uses_the_split_training_used(file_run, data_file):
    """The rows evaluate treats as training rows are those the weights were trained on: their
    fingerprint is the one training stored in state.safetensors."""
    from physdiff.evaluation.references import held_out_split
    from physdiff.training import data_fingerprint

    run = LoadedRun(file_run, device="cpu")
    train_rows, held_rows = held_out_split(run)
    _, meta = ck.read_tensors(file_run / ck.STATE_FILE)
    assert data_fingerprint(train_rows) == meta["data_fingerprint"]
    np.testing.assert_array_equal(held_rows, load_array(data_file)[np.load(file_run / ck.VALIDATION_FILE)])


def test_evaluate_json_reports_the_held_out_reference_and_ratio_errors(file_run, capsys):
    import json

    assert main(["evaluate", str(file_run), "--json", "--n", "30", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    ref = report["reference"]
    assert ref == {"kind": "held-out rows", "n_held_out": 40, "n_train": 360, "pairs": 5}
    assert report["n"] == 30
    sw = report["metrics"]["sliced_wasserstein"]
    assert sw["ratio"] == pytest.approx(sw["value"] / sw["floor"]) and 0 < sw["ratio_error"] < sw["ratio"]
    assert report["memorisation"]["n_samples"] == 150 and isinstance(report["memorisation"]["flagged"], bool)
    assert main(["evaluate", str(file_run), "--n", "30", "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert f"{sw['ratio']:.2f} ± {sw['ratio_error']:.2f}" in table and "40 held-out rows" in table


def test_memorisation_is_flagged_and_fresh_data_is_not(file_run):
    """Samples that are the training rows match the floor (training rows vs held-out rows is
    the floor), so only the nearest-neighbour check can see them; fresh draws from the data's
    law pass it."""
    from physdiff.evaluation import format_report, vectors
    from physdiff.evaluation.references import held_out_split

    run = LoadedRun(file_run, device="cpu")
    train_rows, _ = held_out_split(run)
    copied = vectors.evaluate(run, 40, 0, samples=train_rows[:200])
    assert copied["memorisation"]["flagged"] and copied["memorisation"]["share"] > 0.9
    sw = copied["metrics"]["sliced_wasserstein"]
    assert abs(sw["ratio"] - 1) < 4 * sw["ratio_error"] + 0.1  # the distances cannot tell
    assert "FLAGGED" in format_report(copied)
    fresh = vectors.evaluate(run, 40, 0, samples=points(200, seed=5))
    assert not fresh["memorisation"]["flagged"], fresh["memorisation"]
    assert fresh["memorisation"]["share"] < 0.3 and "FLAGGED" not in format_report(fresh)


def test_a_run_without_split_evaluates_as_before(tmp_path, data_file):
    """A file's run that held nothing out (as runs of config version <= 5) is compared with two
    halves of the file, one pair: no ratio error, no memorisation check."""
    from physdiff.evaluation import format_report, vectors

    out = train(Config().with_overrides(TINY | {"data.validation_fraction": 0.0}), tmp_path / "r", data=data_file,
                progress=False)
    report = vectors.evaluate(LoadedRun(out, device="cpu"), 100, 0)
    assert report["n"] == 100 and report["reference"]["pairs"] == 1 and "memorisation" not in report
    sw = report["metrics"]["sliced_wasserstein"]
    assert np.isnan(sw["ratio_error"]) and "±" not in format_report(report).split("\n")[3]
    assert "halves of the data file" in format_report(report)
    # a run directory of config version 5 (no validation_fraction key, no validation.npy) loads
    # unchanged and is evaluated the same way: two halves of the file drawn by the seed
    text = (out / ck.CONFIG_FILE).read_text()
    assert f"version = {CONFIG_VERSION}" in text and "validation_fraction = 0.0\n" in text
    (out / ck.CONFIG_FILE).write_text(text.replace(f"version = {CONFIG_VERSION}", "version = 5").replace(
        "validation_fraction = 0.0\n", ""))
    old = vectors.evaluate(LoadedRun(out, device="cpu"), 100, 0)
    assert old["metrics"] == report["metrics"]
    x = load_array(data_file)
    perm = np.random.default_rng(0).permutation(len(x))
    from physdiff.metrics import sliced_wasserstein

    assert sw["floor"] == pytest.approx(sliced_wasserstein(x[perm[100:200]], x[perm[:100]]))


def test_ratio_bootstrap_error_matches_the_spread_of_repeated_experiments():
    """The bootstrap error of mean(v)/rms(f) over R pairs is the spread of that ratio over
    independent repetitions of the experiment (within 20%, the bootstrap's own noise at R = 30)."""
    from physdiff.stats import ratio_bootstrap

    rng = np.random.default_rng(1)
    ratios, errors = [], []
    for _ in range(300):
        v, f = rng.gamma(20, 0.05, 30), rng.gamma(20, 0.05, 30)
        r, e = ratio_bootstrap(v, f, n_boot=300, seed=int(rng.integers(1 << 30)))
        ratios.append(r)
        errors.append(e)
    assert np.std(ratios) == pytest.approx(np.mean(errors), rel=0.2)
    # v and f of one law: mean(v)/rms(f) → E v/√(E f²) = 1/√(1 + cv²), cv² = 1/20 for gamma(20)
    assert abs(np.mean(ratios) - 1 / np.sqrt(1 + 1 / 20)) < 4 * np.std(ratios) / np.sqrt(300)
    assert np.isnan(ratio_bootstrap([1.0], [1.0])[1])
    assert ratio_bootstrap(2.0, [1.0, 1.0, 1.0])[1] == 0.0  # no spread in the floors, one shared value


# ---------------------------------------------------------------- Python API habits


def test_train_from_an_array_matches_train_from_the_same_file(tmp_path, file_run, data_file):
    """physdiff.train(cfg, out, data=array): the array is saved as RUN/data.npy (float64, exactly),
    config.toml names it, and the weights, split and metrics are those of the same data given as
    a file."""
    import physdiff

    x = points()
    out = physdiff.train(Config().with_overrides(TINY), tmp_path / "mem", data=x, progress=False)
    saved = np.load(out / ck.DATA_FILE)
    assert saved.dtype == np.float64 and np.array_equal(saved, x)
    assert load_config(out / ck.CONFIG_FILE).data.file == str((out / ck.DATA_FILE).resolve())
    np.testing.assert_array_equal(np.load(out / ck.VALIDATION_FILE), np.load(file_run / ck.VALIDATION_FILE))
    for name in (ck.EMA_FILE, ck.MODEL_FILE):
        a, b = ck.read_tensors(out / name)[0], ck.read_tensors(file_run / name)[0]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    val = lambda run: read_metrics(run / ck.METRICS_FILE)[0][VALIDATION_COLUMN]  # noqa: E731
    np.testing.assert_array_equal(val(out), val(file_run))
    # the run works on its own: resume and evaluate read RUN/data.npy
    train(None, out, resume=True, steps=80, progress=False)
    from physdiff.evaluation import evaluate

    assert evaluate(LoadedRun(out), 20, 0)["reference"]["kind"] == "held-out rows"


def test_train_from_a_path(tmp_path, data_file):
    """data= a path is data.file, resolved."""
    import physdiff

    out = physdiff.train(Config().with_overrides(TINY), tmp_path / "p", data=str(data_file), progress=False)
    assert load_config(out / ck.CONFIG_FILE).data.file == str(data_file.resolve())
    assert not (out / ck.DATA_FILE).exists()


@pytest.mark.parametrize("bad,message", [
    (np.zeros((40, 2, 2)), "has shape"),
    (np.full((40, 2), np.nan), "NaN/inf"),
    (np.array([["a", "b"]] * 40), "expected a numeric array"),
    (np.zeros((3, 2)), "at least 16 rows"),
])
def test_a_bad_array_is_refused_before_anything_is_written(tmp_path, bad, message):
    with pytest.raises(PhysdiffError, match=message) as info:
        train(None, tmp_path / "r", data=bad, progress=False)  # no config: the defaults
    assert "the data array" in str(info.value) and not (tmp_path / "r").exists()


def test_loaded_run_picks_the_device_as_the_cli_does(file_run):
    from physdiff.devices import resolve_device

    assert LoadedRun(file_run).device == resolve_device("auto")
    assert LoadedRun(file_run, device=torch.device("cpu")).device == torch.device("cpu")
    with pytest.raises(PhysdiffError, match="unknown device 'gpu'"):
        LoadedRun(file_run, device="gpu")


def test_figures_of_a_held_out_run_draw_all_the_data(file_run):
    """The samples figure shows up to n rows of the whole file, not only the 40 held-out ones."""
    from physdiff.evaluation import vectors

    figs = vectors.figures(LoadedRun(file_run, device="cpu"), 300, 0)
    data = figs["samples.png"].axes[0].collections[0].get_offsets()
    assert len(data) == 300


def test_format_ratio():
    from physdiff.evaluation.vectors import format_ratio

    assert format_ratio({"value": 2.1, "floor": 2.0, "ratio": 1.05, "ratio_error": 0.07}) == "1.05 ± 0.07"
    assert format_ratio({"value": 2.1, "floor": 2.0, "ratio": 1.05, "ratio_error": None}) == "1.05"  # one pair (JSON)
    assert format_ratio({"value": 3.0, "floor": 2.0}) == "1.50"  # an evaluation.json of an older physdiff


def test_nearest_in_blocks_matches_one_block():
    from physdiff.metrics import nearest

    rng = np.random.default_rng(3)
    q, s = rng.normal(size=(70, 3)), rng.normal(size=(500, 3))
    s[123] = q[5]  # an exact copy
    d1, i1 = nearest(q, s)
    d2, i2 = nearest(q, s, chunk=16, support_chunk=37)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=0, atol=1e-12)
    assert i1[5] == 123 and d1[5] < 1e-6


def test_loss_figure_draws_the_validation_loss(file_run):
    from physdiff.evaluation import loss_figure
    from physdiff.plots import figure_table

    fig = loss_figure(LoadedRun(file_run, device="cpu"))["loss.png"]
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "validation loss (held-out rows)" in labels
    rows = figure_table(fig)
    val = read_metrics(file_run / ck.METRICS_FILE)[0][VALIDATION_COLUMN]
    assert [r["val_loss"] for r in rows] == pytest.approx(list(val))

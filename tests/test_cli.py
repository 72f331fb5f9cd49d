"""The physdiff command end to end, and its refusal of bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from physdiff.cli import main

FAST = ["--steps", "200", "--width", "32", "--depth", "2", "--timesteps", "50", "--batch-size", "128",
        "--n-train", "2000", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--dataset", "gaussian", "--out", str(out), *FAST]) == 0
    return out


def test_data_command(tmp_path, capsys):
    assert main(["data", "moons", "--n", "300", "--seed", "3", "--out", str(tmp_path / "m.npy")]) == 0
    x = np.load(tmp_path / "m.npy")
    assert x.shape == (300, 2) and x.dtype == np.float32


def test_sample_evaluate_plot(run_dir, tmp_path, capsys):
    out, traj = tmp_path / "s.npy", tmp_path / "t.npy"
    assert main(["sample", str(run_dir), "--n", "200", "--seed", "4", "--out", str(out),
                 "--trajectory", str(traj), "--snapshots", "5", "--device", "cpu"]) == 0
    x, tr = np.load(out), np.load(traj)
    assert x.shape == (200, 2) and tr.shape == (5, 200, 2)
    np.testing.assert_allclose(tr[-1], x, rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--n", "500", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"sliced_wasserstein", "energy_distance", "mean_error", "cov_error", "log_density"} <= set(report["metrics"])
    assert (run_dir / "evaluation.json").is_file()
    assert main(["evaluate", str(run_dir), "--n", "500"]) == 0
    assert "noise floor" in capsys.readouterr().out
    assert main(["plot", str(run_dir), "--n", "300"]) == 0
    for name in ("samples", "forward", "reverse", "loss"):
        assert (run_dir / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_sample_independent_of_batch_size(run_dir, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    main(["sample", str(run_dir), "--n", "150", "--seed", "9", "--out", str(a), "--batch-size", "64"])
    main(["sample", str(run_dir), "--n", "150", "--seed", "9", "--out", str(b), "--batch-size", "4096"])
    np.testing.assert_array_equal(np.load(a), np.load(b))
    c = tmp_path / "c.npy"
    main(["sample", str(run_dir), "--n", "100", "--seed", "9", "--out", str(c)])
    np.testing.assert_array_equal(np.load(c), np.load(a)[:100])


def test_train_from_file_and_config(tmp_path, capsys):
    data = np.random.default_rng(0).normal(size=(500, 3))
    np.save(tmp_path / "d.npy", data)
    (tmp_path / "c.toml").write_text("[model]\nwidth = 16\n[train]\nsteps = 50\n")
    assert main(["train", "--data", str(tmp_path / "d.npy"), "--config", str(tmp_path / "c.toml"),
                 "--out", str(tmp_path / "r"), "--device", "cpu", "--no-progress"]) == 0
    text = (tmp_path / "r" / "config.toml").read_text()
    assert "width = 16" in text and "steps = 50" in text and "timesteps = 1000" in text
    assert main(["sample", str(tmp_path / "r"), "--n", "10", "--out", str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (10, 3)
    assert main(["evaluate", str(tmp_path / "r"), "--n", "100"]) == 0


def _bad(args, capsys, match):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("physdiff: error: ") and "Traceback" not in err
    assert match in lines[-1], lines[-1]


def test_bad_input(tmp_path, run_dir, capsys):
    nan = tmp_path / "nan.npy"
    arr = np.ones((100, 2))
    arr[7, 1] = np.nan
    np.save(nan, arr)
    (tmp_path / "typo.toml").write_text("[train]\nstesp = 5\n")
    (tmp_path / "range.toml").write_text("[diffusion]\ntimesteps = 0\n")
    (tmp_path / "type.toml").write_text("[train]\nlr = 'fast'\n")
    (tmp_path / "broken.toml").write_text("[train\n")
    (tmp_path / "notrun").mkdir()
    cases = [
        (["data", "spirale", "--out", str(tmp_path / "x.npy")], "did you mean 'spiral'"),
        (["data", "spiral", "--out", str(tmp_path / "x.txt")], "must end in .npy"),
        (["data", "spiral", "--n", "0", "--out", str(tmp_path / "x.npy")], "must be >= 1"),
        (["train", "--data", str(nan), "--out", str(tmp_path / "o1")], "NaN/inf"),
        (["train", "--data", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "o2")], "does not exist"),
        (["train", "--config", str(tmp_path / "typo.toml"), "--out", str(tmp_path / "o3")], "did you mean 'steps'"),
        (["train", "--config", str(tmp_path / "range.toml"), "--out", str(tmp_path / "o4")], "must be >= 1"),
        (["train", "--config", str(tmp_path / "type.toml"), "--out", str(tmp_path / "o5")], "expected float"),
        (["train", "--config", str(tmp_path / "broken.toml"), "--out", str(tmp_path / "o6")], "not valid TOML"),
        (["train", "--schedule", "quadratic", "--out", str(tmp_path / "o7")], "allowed: linear, cosine, sigmoid"),
        (["train", "--out", str(run_dir)], "already exists"),
        (["train", "--resume", "--out", str(tmp_path / "o8")], "not a physdiff run"),
        (["sample", str(tmp_path / "notrun"), "--out", str(tmp_path / "x.npy")], "not a physdiff run"),
        (["sample", str(run_dir), "--weights", "best", "--out", str(tmp_path / "x.npy")], "allowed: ema, model"),
        (["sample", str(run_dir), "--out", str(tmp_path / "nodir" / "x.npy")], "does not exist"),
        (["evaluate", str(run_dir), "--device", "tpu"], "allowed: auto, cpu, cuda"),
        (["frobnicate"], "invalid choice"),
    ]
    for args, match in cases:
        _bad(args, capsys, match)
    assert not list(tmp_path.glob("o*")), "a refused command left output behind"
    assert not (tmp_path / "x.npy").exists()


def test_corrupt_weights_are_refused(tmp_path, run_dir, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    data = (bad / "ema.safetensors").read_bytes()
    (bad / "ema.safetensors").write_bytes(data[: len(data) // 2])
    _bad(["sample", str(bad), "--out", str(tmp_path / "x.npy")], capsys, "corrupt")
    import pickle

    (bad / "ema.safetensors").write_bytes(pickle.dumps({"x": 1}))
    _bad(["sample", str(bad), "--out", str(tmp_path / "x.npy")], capsys, "corrupt")
    shutil.copy(run_dir / "ema.safetensors", bad / "ema.safetensors")
    (bad / "config.toml").write_text((bad / "config.toml").read_text().replace("width = 32", "width = 48"))
    _bad(["sample", str(bad), "--out", str(tmp_path / "x.npy")], capsys, "shape")
    assert not (tmp_path / "x.npy").exists()


def test_console_script_help_and_error(capsys):
    exe = [sys.executable, "-m", "physdiff.cli"]
    out = subprocess.run([*exe, "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "example" in out.stdout
    for cmd in ("data", "sample", "evaluate", "plot", "demo"):  # the same parser, in this process
        with pytest.raises(SystemExit) as exit_:
            main([cmd, "--help"])
        assert exit_.value.code == 0 and "example" in capsys.readouterr().out
    out = subprocess.run([*exe, "train", "--dataset", "nope", "--out", "/nonexistent/x"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "unknown dataset" in out.stderr


def test_fast_samplers_encode_and_nll_from_the_cli(run_dir, tmp_path, capsys):
    for sampler, steps in (("ddim", "10"), ("dpm-solver", "10"), ("ddpm", "10"), ("ode", "5"), ("unipc", "10"),
                           ("sde-dpm-solver", "10")):
        out = tmp_path / f"{sampler}.npy"
        assert main(["sample", str(run_dir), "--n", "64", "--sampler", sampler, "--steps", steps,
                     "--out", str(out)]) == 0
        assert np.load(out).shape == (64, 2) and np.isfinite(np.load(out)).all()
        assert "NFE" in capsys.readouterr().out
    assert main(["evaluate", str(run_dir), "--n", "300", "--nll", "--nll-n", "100", "--json",
                 "--sampler", "dpm-solver", "--steps", "10"]) == 0
    nll = json.loads(capsys.readouterr().out)["nll"]
    assert nll["vb_nats"]["mean"] > nll["ode_nll_nats"]["mean"] - 3 * nll["ode_nll_nats"]["stderr"] - 0.05
    assert "kl_data_model_nats" in nll and nll["divergence"] == "exact"
    np.save(tmp_path / "pts.npy", np.random.default_rng(0).normal(size=(20, 2)))
    assert main(["encode", str(run_dir), "--data", str(tmp_path / "pts.npy"), "--out", str(tmp_path / "z.npy"),
                 "--steps", "20"]) == 0
    assert np.load(tmp_path / "z.npy").shape == (20, 2)
    _bad(["sample", str(run_dir), "--sampler", "euler", "--out", str(tmp_path / "q.npy")], capsys,
         "allowed: ddpm, ddim, dpm-solver, sde-dpm-solver, unipc, ode, distilled")
    _bad(["sample", str(run_dir), "--sampler", "unipc", "--order", "4", "--out", str(tmp_path / "q.npy")], capsys,
         "order = 4 is not available for unipc; allowed: 1, 2, 3")
    _bad(["sample", str(run_dir), "--sampler", "unipc", "--variant", "bh3", "--out", str(tmp_path / "q.npy")],
         capsys, "unknown UniPC variant 'bh3'; allowed: bh1, bh2")
    _bad(["sample", str(run_dir), "--sampler", "ddim", "--variant", "bh1", "--out", str(tmp_path / "q.npy")],
         capsys, "takes no option 'variant'")
    _bad(["sample", str(run_dir), "--steps", "51", "--out", str(tmp_path / "q.npy")], capsys,
         "out of range for a run with T = 50")
    _bad(["sample", str(run_dir), "--eta", "2", "--sampler", "ddim", "--out", str(tmp_path / "q.npy")],
         capsys, "0 <= eta <= 1")
    assert not (tmp_path / "q.npy").exists()


def test_warns_of_ill_conditioned_eps_on_cosine(tmp_path, capsys):
    """ε-prediction on the cosine schedule (√ᾱ_T ≈ 5e-5): strided samplers get a one-line warning,
    ancestral sampling on every step does not."""
    out = tmp_path / "cos"
    args = [a if a != "200" else "5" for a in FAST]
    assert main(["train", "--dataset", "moons", "--schedule", "cosine", "--prediction", "eps", "--out", str(out),
                 *args]) == 0
    capsys.readouterr()
    import warnings

    from physdiff.run import OutlierWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutlierWarning)  # 5 training steps: the samples are far off
        assert main(["sample", str(out), "--n", "64", "--out", str(tmp_path / "a.npy")]) == 0
        assert "ε" not in capsys.readouterr().err
        warnings.simplefilter("always")  # printed by the CLI, as outside pytest
        assert main(["sample", str(out), "--n", "64", "--sampler", "ddim", "--steps", "10",
                     "--out", str(tmp_path / "b.npy")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("physdiff: warning: this run predicts ε")
    assert all(line.startswith("physdiff: warning: ") for line in err)  # one line each (outliers: the second)


def test_vector_figures_show_the_data(run_dir):
    """The figures plot what they say: the samples panel holds the reference and the model's
    points, the forward process ends near N(0, I), every panel has labelled axes."""
    from physdiff.evaluation import figures
    from physdiff.run import LoadedRun

    run = LoadedRun(run_dir)
    samples = run.sample(300, 0, snapshot_steps=(0, run.schedule.T)).samples
    figs = figures(run, 300, 0)
    assert set(figs) == {"samples.png", "forward.png", "reverse.png", "loss.png"}
    for name, fig in figs.items():
        assert (fig._suptitle is not None and fig._suptitle.get_text()) or fig.axes[0].get_title(), name
        for ax in fig.axes:
            assert ax.get_xlabel() or ax.get_ylabel(), name
    data_ax, model_ax = figs["samples.png"].axes[:2]
    model_pts = model_ax.collections[0].get_offsets()
    np.testing.assert_allclose(np.asarray(model_pts), samples, rtol=1e-5, atol=1e-5)  # same seed, same points
    assert len(data_ax.collections[0].get_offsets()) == 300
    last = np.asarray(figs["forward.png"].axes[-1].collections[0].get_offsets())
    assert abs(last.mean()) < 0.3 and abs(last.std() - 1) < 0.15  # x_T ~ N(0, I)
    loss_ax = figs["loss.png"].axes[0]
    assert loss_ax.get_ylabel() and len(loss_ax.lines[0].get_xdata()) >= 1


def test_help_imports_no_torch():
    """`physdiff --help` lists every command with its one-line help and loads no torch (lazy start-up)."""
    probe = ("import runpy, sys\nsys.argv = ['physdiff', '--help']\ntry:\n    runpy.run_module('physdiff', "
             "run_name='__main__')\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
             "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', 'numpy' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("NO-TORCH False"), proc.stdout
    from physdiff.arguments import COMMANDS

    for name, help_ in COMMANDS.items():
        assert name in proc.stdout and help_.split()[0] in proc.stdout
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "physdiff", "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "train" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "physdiff.cli" in imported and not {"torch", "numpy"} & imported


def test_subcommand_help_still_complete(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--lr" in out and "--width" in out and "--resume" in out and "example" in out


def test_version_is_the_pyproject_version():
    import tomllib
    from pathlib import Path

    import physdiff

    expected = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    proc = subprocess.run([sys.executable, "-m", "physdiff", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == f"physdiff {expected}\n" and not proc.stderr
    assert physdiff.__version__ == expected

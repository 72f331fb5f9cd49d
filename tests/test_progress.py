"""Progress of long jobs (progress.py): in a log (stderr not a terminal) the command line prints a
line at the interval of $PHYSDIFF_PROGRESS_INTERVAL (0 here: at every update) for every long job —
mcmc, sample (batches, streamed chunks, --metropolis proposals), evaluate, train — and -q none;
the library prints nothing unless asked."""

import re

import numpy as np
import pytest

from conftest import one_line_error
from physdiff import progress as prog
from physdiff.cli import main

TINY = ["--steps", "10", "--width", "8", "--timesteps", "30", "--n-train", "64", "--batch-size", "32",
        "--checkpoint-every", "5", "--device", "cpu", "--L", "4"]
LINE = re.compile(r"^physdiff: (.+?): (\d+)/(\d+) (\w+)s \(\d+%\), .* elapsed \d+:\d\d, ETA (\d+:\d\d|\?)", re.M)


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setenv(prog.INTERVAL_ENV, "0")


def jobs(err):
    """{job: units} of the progress lines in ``err``."""
    return {m.group(1): m.group(4) for m in LINE.finditer(err)}


@pytest.fixture(scope="module")
def ising_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("progress") / "ising"
    assert main(["train", "--dataset", "ising", "--out", str(out), *TINY, "--no-progress"]) == 0
    return out


def test_train_prints_lines_in_a_log_and_none_with_quiet(every_update, tmp_path, capsys):
    base = ["train", "--dataset", "ising", *TINY]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert jobs(err).get("train") == "step", err
    assert "physdiff: train: 10/10 steps done in" in err and "loss" in err
    assert main([*base, "--out", str(tmp_path / "b"), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_mcmc_reports_thermalisation_and_production(every_update, tmp_path, capsys):
    assert main(["mcmc", "ising", "--L", "4", "--n", "32", "--chains", "2", "--out", str(tmp_path / "e.npy")]) == 0
    err = capsys.readouterr().err
    assert jobs(err) == {"mcmc ising L=4 thermalisation": "sweep", "mcmc ising L=4 production": "sweep"}, err
    assert main(["mcmc", "ising", "--L", "4", "--n", "32", "--chains", "2", "--out", str(tmp_path / "q.npy"),
                 "--quiet"]) == 0
    assert capsys.readouterr().err == ""  # no progress, no note


def test_mcmc_logs_the_burn_in_its_json_records(tmp_path, capsys):
    import json

    out = tmp_path / "e.npy"
    assert main(["mcmc", "phi4", "--L", "4", "--n", "32", "--chains", "2", "--out", str(out)]) == 0
    logged = re.search(r"burn-in (\d+) sweeps", capsys.readouterr().err)
    info = json.loads(out.with_suffix(".json").read_text())
    assert logged and int(logged.group(1)) == info["burn_in_sweeps"]
    # every sweep before the first saved one: the 2 × 300 of the pilot, then 20 τ_int
    assert info["burn_in_sweeps"] == 600 + np.ceil(20 * info["pilot_tau_int_abs_m_sweeps"])


def test_sample_and_metropolis_report_per_batch(every_update, ising_run, tmp_path, capsys):
    base = ["sample", str(ising_run), "--steps", "2", "--device", "cpu", "--batch-size", "64"]
    assert main([*base, "--n", "130", "--out", str(tmp_path / "s.npy")]) == 0
    err = capsys.readouterr().err
    assert jobs(err) == {"sample (ode)": "sample"}, err
    counts = [int(m.group(2)) for m in LINE.finditer(err)]
    assert counts == [64, 128, 130]  # one line per batch of 64
    assert main([*base, "--n", "6", "--burn-in", "2", "--metropolis", "--out", str(tmp_path / "m.npy")]) == 0
    err = capsys.readouterr().err
    # 6 + a burn-in of 2 proposals, then the solver check's 8 (all of them) again: one count of 16
    assert jobs(err) == {"exact sampler": "proposal"} and "16/16 proposals" in err, err
    assert main([*base, "--n", "8", "--out", str(tmp_path / "q.npy"), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_a_streamed_file_has_one_count_over_its_chunks(every_update, ising_run, tmp_path, capsys, monkeypatch):
    import physdiff.sampling as sampling

    monkeypatch.setattr(sampling, "STREAM_BYTES", 16 * 4 * 64)  # 64 configurations a chunk
    assert main(["sample", str(ising_run), "--n", "150", "--steps", "2", "--device", "cpu",
                 "--out", str(tmp_path / "s.npy")]) == 0
    err = capsys.readouterr().err
    assert jobs(err) == {"sample (ode, streamed)": "sample"}, err
    assert [int(m.group(2)) for m in LINE.finditer(err)] == [64, 128, 150]


def test_evaluate_reports_sampling_and_its_monte_carlo_reference(every_update, ising_run, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setenv("PHYSDIFF_CACHE", str(tmp_path))  # the reference is made, not read from the cache
    assert main(["evaluate", str(ising_run), "--n", "16", "--steps", "2", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert set(jobs(err)) == {"sample (ode)", "mcmc ising L=4 thermalisation", "mcmc ising L=4 production"}, err
    assert main(["evaluate", str(ising_run), "--n", "16", "--steps", "2", "--device", "cpu", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_the_classifier_training_reports_its_steps(every_update, capsys):
    from physdiff.classifier import train_classifier
    from physdiff.data.images import ImageData

    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 8, 8), dtype=np.float32), np.arange(40) % 2
    data = ImageData("noise", x, y, x, y, ("a", "b"))
    train_classifier(data, max_steps=3, batch_size=8, progress=True)
    assert "physdiff: classifier: 3/3 steps done in" in capsys.readouterr().err


def test_the_library_prints_nothing_unless_asked(every_update, tmp_path, capsys):
    from physdiff.lattice.mc import run_mcmc
    from physdiff.lattice.theory import make_theory

    run_mcmc(make_theory("ising", 4), 4, 32, chains=2)  # progress=None: a bar on a terminal only
    assert capsys.readouterr().err == ""
    run_mcmc(make_theory("ising", 4), 4, 32, chains=2, progress=True)
    assert "production" in capsys.readouterr().err


def test_lines_follow_the_interval(monkeypatch, capsys):
    now = [100.0]
    monkeypatch.setattr(prog.time, "monotonic", lambda: now[0])
    monkeypatch.setenv(prog.INTERVAL_ENV, "30")
    with prog.progress_bar(True, 100, "job", "sweep") as bar:
        for _ in range(100):
            now[0] += 1.0  # a sweep a second: a line every 30
            bar.update()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "physdiff: job: 30/100 sweeps (30%), 1 sweeps/s, elapsed 0:30, ETA 1:10"
    assert len(lines) == 4 and lines[-1] == "physdiff: job: 100/100 sweeps done in 1:40"
    with prog.progress_bar(True, 10, "short", "sweep") as bar:
        bar.update(10)  # a job shorter than the interval leaves no line
    assert capsys.readouterr().err == ""


def test_who_reports(monkeypatch):
    assert prog._mode(None) == "off" and prog._mode(False) == "off"  # stderr is captured: not a terminal
    assert prog._mode(True) == "lines"
    monkeypatch.setattr(prog.sys.stderr, "isatty", lambda: True, raising=False)
    assert prog._mode(None) == "bar" and prog._mode(True) == "bar" and prog._mode(False) == "off"
    monkeypatch.setenv("RANK", "1")  # torchrun: rank 0 alone reports
    assert prog._mode(True) == "off"


def test_a_bad_interval_is_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(prog.INTERVAL_ENV, "soon")
    err = one_line_error(capsys, ["mcmc", "ising", "--L", "4", "--n", "32", "--out", str(tmp_path / "e.npy")])
    assert prog.INTERVAL_ENV in err and not list(tmp_path.iterdir())
    assert main(["mcmc", "ising", "--L", "4", "--n", "32", "--out", str(tmp_path / "e.npy"), "-q"]) == 0

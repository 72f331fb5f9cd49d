"""Issue 38, the fourth hostile round, on runs, scans and their files: no stale answer (a data file
changed since training, a held-out record cut short, an HDF5 file whose two records disagree), no
file of the user's replaced (a scan folder, a run being overwritten), refusals before any work
(a scan's model options, data.couplings without a range), one line instead of a traceback (a
corrupt timesteps.json), no lock file left by a SIGTERM or Ctrl-C, the habits (-q everywhere, a
range with inf or nan, the n a re-scan used, the library's own words) and a property: every number
a tiny scan reports is finite, or it says why not in one line."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import one_line_error
from physdiff import checkpoint as ck
from physdiff.cli import main
from physdiff.config import Config
from physdiff.errors import PhysdiffError
from physdiff.training import train

TINY = {"train.steps": 40, "train.log_every": 20, "train.checkpoint_every": 40, "model.width": 16,
        "model.depth": 1, "diffusion.timesteps": 50, "train.batch_size": 64, "train.device": "cpu"}
ENV = os.environ | {"OMP_NUM_THREADS": "1", "PHYSDIFF_PROGRESS_INTERVAL": "86400"}
CLI = [sys.executable, "-m", "physdiff.cli"]


def points(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)) * [2.0, 0.5] + [1.0, -1.0]


@pytest.fixture(scope="module")
def _trained(tmp_path_factory):
    data = tmp_path_factory.mktemp("data") / "points.npy"
    np.save(data, points())
    return train(Config().with_overrides(TINY), tmp_path_factory.mktemp("runs") / "run", data=data,
                 progress=False), data


@pytest.fixture
def file_run(_trained, tmp_path):
    """A copy of a tiny run on a user's file (10 % of its rows held out), and the file (put back
    after each test)."""
    import shutil

    run, data = _trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    yield copy, data
    np.save(data, points())


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- 1. stale answers


def test_evaluate_refuses_a_data_file_changed_since_training(file_run, capsys):
    """Same rows, shifted: the fingerprint of the training rows differs from the run's record, so
    evaluate (and distill's data) refuse in one line naming the file, and write nothing."""
    run, data = file_run
    np.save(data, points() + 0.5)
    before = _tree(run)
    err = one_line_error(capsys, ["evaluate", str(run), "--n", "20", "--device", "cpu"])
    assert "is not the data run" in err and str(data) in err and "fingerprint" in err
    assert _tree(run) == before and not (run / "evaluation.json").exists()
    # the Python API says the same, in the library's words
    from physdiff.evaluation.references import held_out_split
    from physdiff.run import LoadedRun

    with pytest.raises(PhysdiffError, match="not the data run"):
        held_out_split(LoadedRun(run, device="cpu"))
    np.save(data, points())  # put back: evaluated as before
    assert main(["evaluate", str(run), "--n", "20", "--device", "cpu", "-q"]) == 0


def test_distill_refuses_a_data_file_changed_since_training(tmp_path):
    """distill trains students on the run's data: a file changed since is refused, nothing written."""
    from physdiff.distill import FILE, distill_run
    from physdiff.run import LoadedRun

    data = tmp_path / "points.npy"
    np.save(data, points())
    run = train(Config().with_overrides(TINY | {"diffusion.prediction": "v"}), tmp_path / "run", data=data,
                progress=False)
    np.save(data, points()[::-1])  # the same rows, reordered: another training split
    with pytest.raises(PhysdiffError, match="is not the data run"):
        distill_run(LoadedRun(run, device="cpu"), [1], base=2, iterations=1, batch_size=16)
    assert not (run / FILE).exists()
    np.save(data, points())
    distill_run(LoadedRun(run, device="cpu"), [1], base=2, iterations=1, batch_size=16)
    assert (run / FILE).is_file()


def test_a_held_out_record_cut_short_is_refused(file_run, capsys):
    """validation.npy cut to 5 of its 30 rows (distinct, in range) would give a floor and
    memorisation thresholds from 5 rows: its length must be round(fraction · N)."""
    run, _ = file_run
    held = np.load(run / ck.VALIDATION_FILE)
    assert len(held) == 30
    np.save(run / ck.VALIDATION_FILE, held[:5])
    err = one_line_error(capsys, ["evaluate", str(run), "--n", "20", "--device", "cpu"])
    assert "names 5 held-out rows" in err and "held out 30" in err
    # a resume reads the same record, and refuses it the same way
    err = one_line_error(capsys, ["train", "--resume", str(run), "--steps", "60", "--no-progress"])
    assert "names 5 held-out rows" in err


def test_hdf5_flat_attributes_must_agree_with_the_physdiff_record():
    """The helper lattice/ensemble.py's HDF5 reader is to call: a flat attribute (kappa, chains)
    that says otherwise than the 'physdiff' JSON attribute is named with both values."""
    info = {"params": {"model": "phi4", "kappa": 0.27, "lam": 0.022}, "chains": 16, "n": 64, "cluster": True,
            "tau": float("nan")}
    agree = {"model": "phi4", "kappa": 0.27, "lam": 0.022, "chains": 16, "n": 64, "cluster": True}
    ck.check_flat_attributes(agree, info, "ensemble 'e.h5'")
    ck.check_flat_attributes({"kappa": 0.27}, info, "ensemble 'e.h5'")  # a reader may drop some
    for key, value in (("kappa", 0.3), ("chains", 8), ("model", "ising"), ("cluster", False)):
        with pytest.raises(PhysdiffError, match=rf"'{key}' = {value!r} disagrees .* says {key} = "):
            ck.check_flat_attributes(agree | {key: value}, info, "ensemble 'e.h5'")


# ---------------------------------------------------------------- 2. the user's files


def _scan_args(out, *extra, n="64"):
    return ["scan", "ising", "--L", "4", "--beta", "0.3,0.5", "--n", n, "--chains", "4", "--out", str(out), "-q",
            *extra]


def test_a_scan_replaces_only_the_files_an_earlier_scan_wrote(tmp_path, capsys):
    """scan.json lists every file it wrote with its SHA-256: a user's scan_model.csv / .png beside
    a valid scan.json, or a scan.csv edited since, is refused without --overwrite (nothing
    written, before any Monte Carlo); an unchanged folder is rescanned as before."""
    from physdiff.lattice.scan import scan_to_folder

    out = tmp_path / "scan"
    assert main(_scan_args(out)) == 0
    res = json.loads((out / "scan.json").read_text())
    assert set(res["files"]) == {"scan.csv", "scan_observables.png", "scan_observables.csv", "scan_binder.png",
                                 "scan_binder.csv"}
    assert main(_scan_args(out)) == 0  # unchanged: recomputed
    capsys.readouterr()
    for name in ("scan_model.csv", "scan_model.png"):
        (out / name).write_bytes(b"my own " + name.encode())
        before = _tree(out)
        with pytest.raises(PhysdiffError, match="was not written by physdiff scan"):  # a scan with a model
            scan_to_folder("ising", [4], "beta", [0.3, 0.5], {}, 64, out, chains=4, run=object())
        assert _tree(out) == before
        (out / name).unlink()
    (out / "scan.csv").write_text("L,beta\nmy edits\n")
    before = _tree(out)
    err = one_line_error(capsys, _scan_args(out, "--beta", "0.3,0.4,0.5"))
    assert "scan.csv" in err and "(or was changed since)" in err and "--overwrite" in err
    assert _tree(out) == before  # not even the new point's ensemble
    assert main(_scan_args(out, "--overwrite")) == 0
    # an earlier scan's figure in another format stays listed as the earlier scan's
    assert main(_scan_args(out, "--format", "svg")) == 0
    res = json.loads((out / "scan.json").read_text())
    assert {"scan_observables.png", "scan_observables.svg"} <= set(res["files"])
    assert main(_scan_args(out)) == 0


def _wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_train_overwrite_killed_before_its_first_checkpoint_keeps_the_old_run(tmp_path, sig):
    """`train --overwrite` trains the new run in a hidden folder beside the old one and swaps it in
    at its first checkpoint: killed before it (kill -9, or SIGTERM), the old run is there, byte for
    byte; a SIGTERM removes the new folder, and the next train removes what a kill -9 left."""
    run = tmp_path / "run"
    base = ["--dataset", "two_gaussians", "--width", "16", "--depth", "1", "--timesteps", "50", "--batch-size",
            "64", "--n-train", "500", "--device", "cpu", "--no-progress"]
    subprocess.run([*CLI, "train", *base, "--steps", "20", "--out", str(run)], check=True, env=ENV,
                   capture_output=True)
    old = _tree(run)
    proc = subprocess.Popen([*CLI, "train", *base, "--steps", "1000000", "--checkpoint-every", "1000000",
                             "--out", str(run), "--overwrite"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)

    def started():  # the new run's config written, beside the old run or (as before the fix) in its place
        configs = [*tmp_path.glob(".run.new-*/config.toml"), run / ck.CONFIG_FILE]
        return any(p.is_file() and "steps = 1000000" in p.read_text() for p in configs)

    try:
        assert _wait_for(started, 60) and proc.poll() is None, "the new run should have started"
        time.sleep(1.0)  # well into its training, long before a checkpoint
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert _tree(run) == old, "the old run must survive until the new one has weights"
    leftovers = list(tmp_path.glob(".run.*"))
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM and b"Traceback" not in stderr, stderr
        assert leftovers == []
    else:
        assert leftovers  # nothing can clean up after a kill -9 ...
    subprocess.run([*CLI, "train", *base, "--steps", "20", "--seed", "1", "--out", str(run), "--overwrite"],
                   check=True, env=ENV, capture_output=True)
    assert list(tmp_path.glob(".run.*")) == []  # ... but the next train does
    assert _tree(run) != old and (run / ck.EMA_FILE).is_file()


# ---------------------------------------------------------------- 3. refused before any work


@pytest.fixture(scope="module")
def phi4_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lattice") / "phi4"
    assert main(["train", "--dataset", "phi4", "--L", "4", "--kappa", "0.15", "--lam", "0", "--steps", "10",
                 "--n-train", "256", "--width", "16", "--device", "cpu", "--out", str(out), "-q"]) == 0
    return out


@pytest.mark.parametrize("extra, said", [(["--model-n", "1"], "model_n (--model-n) = 1"),
                                         (["--steps", "100000"], "steps = 100000 is out of range")])
def test_scan_model_options_are_checked_before_any_monte_carlo(phi4_run, tmp_path, capsys, extra, said):
    out = tmp_path / "scan"
    err = one_line_error(capsys, ["scan", "phi4", "--L", "4", "--kappa", "0.13,0.15", "--lam", "0", "--n", "64",
                                  "--chains", "4", "--out", str(out), "--model", str(phi4_run), "--device", "cpu",
                                  "-q", *extra])
    assert not (out / "ensembles").exists() and not out.exists(), "refused only after some Monte Carlo"
    assert said in err


def test_an_ensemble_made_otherwise_is_named_before_any_monte_carlo(tmp_path, capsys):
    """The folder's ensemble at β = 0.5 was made with 4 chains: a scan over 0.3, 0.5 with 2 chains is
    refused before the new point at 0.3 is made (it was refused only on reaching 0.5)."""
    out = tmp_path / "s"
    assert main(["scan", "ising", "--L", "4", "--beta", "0.5,0.6", "--n", "64", "--chains", "4", "--out", str(out),
                 "-q"]) == 0
    before = _tree(out)
    err = one_line_error(capsys, ["scan", "ising", "--L", "4", "--beta", "0.3,0.5", "--n", "64", "--chains", "2",
                                  "--out", str(out), "-q"])
    assert "made with chains = 4, not 2" in err and _tree(out) == before


def test_couplings_without_a_coupling_range_is_refused(tmp_path, capsys):
    err = one_line_error(capsys, ["train", "--dataset", "phi4", "--L", "4", "--couplings", "3", "--out",
                                  str(tmp_path / "r")])
    assert "data.couplings = 3" in err and "no coupling of theory 'phi4' is a range" in err
    assert not (tmp_path / "r").exists()
    with pytest.raises(PhysdiffError, match=r"data\.couplings = 3"):
        Config().with_overrides({"data.couplings": 3})
    Config().with_overrides({"data.dataset": "phi4", "theory.kappa": [0.2, 0.24], "data.couplings": 3,
                             "data.n_train": 512})


# ---------------------------------------------------------------- 4. tracebacks


@pytest.mark.parametrize("entry", [{"kept": True, "timesteps": None}, {"kept": True, "timesteps": 7},
                                   {"kept": True, "timesteps": [1, "x"]}, {"kept": "yes", "timesteps": [49]}, 3,
                                   {"kept": True, "timesteps": [0, 10, 99999]}])
def test_a_corrupt_timesteps_file_is_one_line_naming_it(file_run, tmp_path, capsys, entry):
    """A fit whose timesteps are null, a number, not integers, out of the run's range, or not a fit
    at all: sample and the API refuse in one line naming timesteps.json, never a TypeError."""
    from physdiff.fitted_steps import FILE, FORMAT, fit_key
    from physdiff.run import LoadedRun

    run, _ = file_run
    loaded = LoadedRun(run, device="cpu")
    key = fit_key("unipc", {"steps": 3, "order": 2, "variant": "bh2"}, loaded.fit_context(None))
    (run / FILE).write_text(json.dumps({"format": FORMAT, "fits": {key: entry}}))
    err = one_line_error(capsys, ["sample", str(run), "--sampler", "unipc", "--steps", "3", "--order", "2",
                                  "--n", "8", "--device", "cpu", "--out", str(tmp_path / "s.npy")])
    assert str(run / FILE) in err and "fit again" in err
    assert not (tmp_path / "s.npy").exists()
    with pytest.raises(PhysdiffError, match=r"timesteps\.json"):
        loaded.sample(8, 0, sampler="unipc", steps=3, order=2)


# ---------------------------------------------------------------- 5. leftovers


def test_an_output_lock_is_removed_only_if_it_is_still_ours(tmp_path):
    out = tmp_path / "e.npy"
    lock = ck.OutputLock(out).acquire()
    assert (tmp_path / ".e.lock").is_file()
    lock.release()
    assert not (tmp_path / ".e.lock").exists()  # a normal release leaves nothing
    lock = ck.OutputLock(out).acquire()
    os.unlink(tmp_path / ".e.lock")  # another process's lock now sits at the path
    (tmp_path / ".e.lock").write_text("")
    lock.release()
    assert (tmp_path / ".e.lock").exists(), "the lock file of another process must not be removed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("command", ["mcmc", "scan"])
def test_a_terminated_command_leaves_no_lock_file(tmp_path, sig, command):
    """SIGTERM ends a command as Ctrl-C does: its locks released and their .NAME.lock files removed,
    its temporaries deleted, exit 143 (130 for Ctrl-C), one line, no traceback. (A kill -9 cannot
    be cleaned up after: the next command naming the output locks and removes the empty file.)"""
    if command == "mcmc":
        args = ["mcmc", "phi4", "--L", "32", "--kappa", "0.27", "--lam", "0.022", "--n", "20000",
                "--out", str(tmp_path / "e.npy"), "-q"]
        folder = tmp_path
    else:
        args = ["scan", "phi4", "--L", "32", "--kappa", "0.26,0.27", "--lam", "0.022", "--n", "20000",
                "--out", str(tmp_path / "s"), "-q"]
        folder = tmp_path / "s" / "ensembles"
    proc = subprocess.Popen([*CLI, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: any(folder.glob(".*.lock")), 60), "the command should hold its output's lock"
        time.sleep(0.5)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    assert b"Traceback" not in stderr and stderr.decode().count("\n") == 1, stderr
    assert not list(tmp_path.rglob(".*.lock")) and not list(tmp_path.rglob(".*.tmp"))


def test_after_a_normal_command_no_lock_file_remains(tmp_path):
    for args in (["mcmc", "ising", "--L", "4", "--beta", "0.4", "--n", "64", "--chains", "4", "--out",
                  str(tmp_path / "e.npy")], _scan_args(tmp_path / "s")):
        assert main([*args, "-q"] if "-q" not in args else args) == 0
    assert not list(tmp_path.rglob(".*.lock"))


# ---------------------------------------------------------------- 6. habits


@pytest.mark.parametrize("text", ["0.2:inf:3", "nan:0.3:3", "0.2:-inf:3", "0.2:nan:3"])
def test_a_range_with_inf_or_nan_is_not_a_finite_number(tmp_path, capsys, text):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning before the error
        err = one_line_error(capsys, ["scan", "phi4", "--L", "4", "--kappa", text, "--out", str(tmp_path / "s")])
    assert "not a finite number" in err and text in err and not (tmp_path / "s").exists()


def test_a_scan_list_may_start_with_a_negative_coupling(tmp_path, capsys):
    """`--kappa -0.01,0.1` is the list, not an unknown option (a range -0.1:0.2 already was): the
    theory then names the value it refuses."""
    err = one_line_error(capsys, ["scan", "phi4", "--L", "4", "--kappa", "-0.01,0.1", "--out", str(tmp_path / "s")])
    assert "expected one argument" not in err and "-0.01" in err and "out of range" in err


def test_quiet_is_an_option_of_every_command(file_run, tmp_path, capsys):
    run, data = file_run
    assert main(["encode", str(run), "--data", str(data), "--out", str(tmp_path / "z.npy"), "--steps", "5",
                 "--device", "cpu", "-q"]) == 0
    assert main(["mcmc", "ising", "--L", "4", "--beta", "0.4", "--n", "64", "--chains", "4", "--out",
                 str(tmp_path / "e.npy"), "-q"]) == 0
    assert main(["observables", str(tmp_path / "e.npy"), "-q"]) == 0
    assert main(["data", "moons", "--n", "16", "--out", str(tmp_path / "m.npy"), "-q"]) == 0


def test_a_rescan_with_a_smaller_n_says_what_it_used(tmp_path):
    """The ensembles of n = 128 are reused by a scan asking for 64: scan.json says both (n_requested,
    and n, the configurations each point used), scan.csv has each row's n."""
    out = tmp_path / "s"
    assert main(_scan_args(out, n="128")) == 0
    assert main(_scan_args(out, n="64")) == 0
    res = json.loads((out / "scan.json").read_text())
    assert res["n_requested"] == 64 and res["n"] == 128 and res["n_used"] == {"min": 128, "max": 128}
    assert {p["n"] for p in res["points"]} == {128} and {p["status"] for p in res["points"]} == {"reused"}
    rows = (out / "scan.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["L", "beta", "n"] and {r.split(",")[2] for r in rows[1:]} == {"128"}
    # n is rounded up to a multiple of the chains, as mcmc does
    assert main(_scan_args(tmp_path / "t", "--beta", "0.3,0.4", n="30")) == 0
    res = json.loads((tmp_path / "t" / "scan.json").read_text())
    assert res["n_requested"] == 30 and res["n"] == 32


def test_library_errors_speak_of_arguments_not_only_flags(tmp_path):
    """The Python API's errors name the argument (overwrite=True, n, data.couplings, kappa); the
    flag comes second, for the command line."""
    from physdiff.lattice.conditioning import Conditioning
    from physdiff.lattice.scan import check_counts, check_scan_folder, parse_values

    (tmp_path / "x.npy").write_bytes(b"")
    with pytest.raises(PhysdiffError, match=r"pass overwrite=True \(on the command line --overwrite\)"):
        ck.new_output(tmp_path / "x.npy", False)
    with pytest.raises(PhysdiffError, match=r"^output 'y.txt' must end in .npy"):
        ck.npy_output("y.txt")
    with pytest.raises(PhysdiffError, match=r"^n \(--n\) = 3 configurations"):
        check_counts(3, 4)
    with pytest.raises(PhysdiffError, match=r"^kappa \(--kappa\) 'a' is not"):
        parse_values("a", "kappa")
    (tmp_path / "f").write_text("")
    with pytest.raises(PhysdiffError, match=r"\(out, --out\) exists and is not a folder"):
        check_scan_folder(tmp_path / "f", "png", False)
    with pytest.raises(PhysdiffError, match=r"^kappa = 0.5 is outside"):
        Conditioning("kappa", 0.1, 0.2, 3).check(0.5)


# ---------------------------------------------------------------- 7. every number a scan reports


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float, np.integer, np.floating)) and not isinstance(obj, bool):
        yield float(obj)


@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(theory=st.sampled_from(["ising", "phi4"]), sizes=st.sampled_from(["4", "4,6"]),
       couplings=st.lists(st.floats(-0.1, 3.0, allow_nan=False).map(lambda v: round(v, 3)), min_size=2,
                          max_size=3, unique=True),
       lam=st.sampled_from([0.0, 0.022, 1.0, 5.0]), chains=st.sampled_from([2, 4]), per_chain=st.integers(1, 16))
def test_every_number_a_scan_reports_is_finite_or_it_says_why(tmp_path_factory, theory, sizes, couplings, lam,
                                                             chains, per_chain):
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out = tmp_path_factory.mktemp("prop") / "s"
    name = "beta" if theory == "ising" else "kappa"
    scale = 1.0 if theory == "ising" else 0.15  # β in [-0.1, 3], κ in [-0.015, 0.45]: both phases, quick chains
    values = ",".join(repr(round(v * scale, 4)) for v in couplings)
    args = ["scan", theory, "--L", sizes, f"--{name}", values, "--n", str(chains * per_chain), "--chains",
            str(chains), "--out", str(out), "--json", "-q", *(["--lam", repr(lam)] if theory == "phi4" else [])]
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(args)
    event("refused" if code else "scanned")
    if code != 0:
        assert code == 2 and stderr.getvalue().count("\n") == 1, stderr.getvalue()
        assert stderr.getvalue().startswith("physdiff: error: ") and "Traceback" not in stderr.getvalue()
        assert not (out / "scan.json").exists()
        return
    res = json.loads(stdout.getvalue())
    assert all(math.isfinite(v) for v in _numbers(res)), res
    for p in res["points"]:  # every observable has a number and an error
        assert all(o["value"] is not None and o["error"] is not None for o in p["observables"].values()), p
    import re

    from physdiff.lattice.scan import format_scan

    for text in ((out / "scan.csv").read_text(), format_scan(res, name)):
        assert not re.search(r"\b(nan|inf|-inf)\b", text, re.IGNORECASE), text

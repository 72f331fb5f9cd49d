"""What made a result: RUN/provenance.json (one session per train, kept across --resume) and the
"provenance" of every JSON written beside samples, ensembles and evaluations."""

import json
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import physdiff
from physdiff import checkpoint as ck
from physdiff import provenance
from physdiff.cli import main

TINY = ["--steps", "10", "--width", "8", "--timesteps", "30", "--n-train", "64", "--batch-size", "32",
        "--checkpoint-every", "5", "--device", "cpu", "--no-progress", "--L", "4"]
KEYS = {"physdiff_version", "versions", "device", "host", "started", "ended"}
PACKAGE = Path(physdiff.__file__).resolve().parent


def _time(text):
    t = datetime.fromisoformat(text)
    assert t.utcoffset().total_seconds() == 0, text  # UTC
    return t


def _git_head():
    """HEAD of the checkout that tracks the imported package, by git itself; None when there is none."""
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=PACKAGE,
                                 capture_output=True, check=False)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return head.stdout.strip() if tracked.returncode == 0 and head.returncode == 0 else None


def check_record(record, command=None):
    """The keys of a provenance record, its times in order and its versions the running ones."""
    import platform

    import torch

    from physdiff.arguments import version

    assert KEYS <= set(record), record
    assert record["physdiff_version"] == version()
    assert record["versions"] == {"python": platform.python_version(), "torch": torch.__version__,
                                  "numpy": np.__version__}
    assert record["device"] == "cpu" and "cuda" not in record
    assert _time(record["started"]) <= _time(record["ended"])
    head = _git_head()
    if head is not None:  # physdiff runs from a git checkout (make test does): its commit is recorded
        assert record["git"]["commit"] == head and isinstance(record["git"]["dirty"], bool)
    if command is not None:
        assert record["command_line"].startswith(f"physdiff {command} ") and "call" not in record


@pytest.fixture(scope="module")
def ising_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prov") / "ising"
    assert main(["train", "--dataset", "ising", "--out", str(out), *TINY]) == 0
    return out


def test_train_records_a_session_and_resume_keeps_it(ising_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ising_run, run)
    assert main(["train", "--resume", str(run), "--steps", "15", "--no-progress"]) == 0
    data = json.loads((run / ck.PROVENANCE_FILE).read_text())
    assert data["format"] == "physdiff provenance"
    first, second = data["sessions"]
    for s, command in ((first, "train --dataset ising"), (second, "train --resume")):
        check_record(s, command)
        assert s["status"] == "completed"
    assert first["step"] == {"start": 0, "end": 10} and second["step"] == {"start": 10, "end": 15}
    assert _time(first["ended"]) <= _time(second["started"])
    assert ck.PROVENANCE_FILE in ck.RUN_FILES  # a run holding it may be replaced with --overwrite


def test_a_session_that_died_is_marked_unfinished_on_resume(ising_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ising_run, run)
    sessions = ck.read_provenance(run)
    sessions[-1] |= {"status": "running", "ended": None}  # as a kill -9 leaves it
    ck.write_provenance(run, sessions)
    assert main(["train", "--resume", str(run), "--steps", "12", "--no-progress"]) == 0
    first, second = ck.read_provenance(run)
    assert first["status"] == "unfinished" and second["status"] == "completed"


def test_a_failed_session_says_so(ising_run, tmp_path, monkeypatch, capsys):
    import shutil

    from physdiff.errors import PhysdiffError
    from physdiff.training import Trainer

    def fail(self, progress=None):
        raise PhysdiffError("training diverged at step 11")

    run = tmp_path / "run"
    shutil.copytree(ising_run, run)
    monkeypatch.setattr(Trainer, "train", fail)
    assert main(["train", "--resume", str(run), "--steps", "20", "--no-progress"]) == 2
    last = ck.read_provenance(run)[-1]
    assert last["status"] == "failed" and last["error"] == "training diverged at step 11"
    assert last["step"] == {"start": 10, "end": 10}  # the checkpoint the run still holds
    assert _time(last["started"]) <= _time(last["ended"])


def test_sample_mcmc_and_evaluate_record_what_made_them(ising_run, tmp_path, capsys):
    out, chain, ens = tmp_path / "s.npy", tmp_path / "m.npy", tmp_path / "e.npy"
    assert main(["sample", str(ising_run), "--n", "8", "--steps", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert main(["sample", str(ising_run), "--metropolis", "--n", "6", "--steps", "2", "--out", str(chain),
                 "--device", "cpu"]) == 0
    assert main(["mcmc", "ising", "--L", "4", "--n", "32", "--chains", "2", "--out", str(ens)]) == 0
    for path, command in ((out, "sample"), (chain, "sample"), (ens, "mcmc")):
        check_record(json.loads(path.with_suffix(".json").read_text())["provenance"], command)
    capsys.readouterr()
    assert main(["evaluate", str(ising_run), "--n", "16", "--steps", "2", "--device", "cpu", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((ising_run / "evaluation.json").read_text())
    check_record(written["provenance"], "evaluate")
    assert printed["provenance"] == written["provenance"]


def test_an_api_call_is_recorded_with_its_plain_arguments(tmp_path):
    from physdiff.lattice.report import make_ensemble
    from physdiff.lattice.theory import make_theory

    out = tmp_path / "e.npy"
    make_ensemble(make_theory("ising", 4), 4, 32, out, seed=3, chains=2)
    record = json.loads(out.with_suffix(".json").read_text())["provenance"]
    check_record(record)
    call = record["call"]
    assert call["function"] == "physdiff.lattice.report.make_ensemble" and "command_line" not in record
    assert call["arguments"] == {"L": 4, "n": 32, "out": str(out), "seed": 3, "chains": 2, "cluster": True,
                                 "log": None, "progress": None}
    assert call["other_arguments"] == ["theory"]  # not a plain value: named, not recorded


OPAQUE = object()


def test_an_outer_call_is_the_invocation_of_the_calls_inside_it():
    seen = []

    @provenance.recorded
    def inner(x):
        seen.append(provenance.current())

    @provenance.recorded
    def outer(a, b=2.5, *, path=Path("p"), obj=OPAQUE):
        inner(7)
        seen.append(provenance.current())

    outer([1, 2])
    (s_in, s_out) = seen
    assert s_in.invocation == s_out.invocation
    assert s_out.invocation["call"]["arguments"] == {"a": [1, 2], "b": 2.5, "path": "p"}
    assert s_out.invocation["call"]["other_arguments"] == ["obj"]
    assert provenance._INVOCATION.get() is None  # nothing left behind


def test_the_commit_is_recorded_from_a_checkout():
    head = _git_head()
    if head is None:
        pytest.skip("physdiff is not imported from a git checkout here")
    assert provenance.package_git_state()["commit"] == head
    assert provenance.Session().record("cpu")["git"]["commit"] == head


def test_no_git_key_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
    (tmp_path / "__init__.py").write_text("")
    assert provenance.git_state(tmp_path) is None  # not a checkout: no error, no key
    monkeypatch.setenv("PATH", str(tmp_path))  # git is missing
    assert provenance.git_state(PACKAGE) is None
    monkeypatch.setattr(provenance, "package_git_state", lambda: None)
    assert "git" not in provenance.Session().record("cpu")


def test_a_tracked_change_makes_the_checkout_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    try:
        git("init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    (tmp_path / "__init__.py").write_text("x = 1\n")
    git("add", "__init__.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    clean = provenance.git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "notes.txt").write_text("untracked files do not count")
    assert provenance.git_state(tmp_path)["dirty"] is False
    (tmp_path / "__init__.py").write_text("x = 2\n")
    assert provenance.git_state(tmp_path) == {"commit": clean["commit"], "dirty": True}


def test_an_unreadable_provenance_file_is_reported_not_fatal(tmp_path):
    (tmp_path / ck.PROVENANCE_FILE).write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        assert ck.read_provenance(tmp_path) == []
    assert ck.read_provenance(tmp_path / "elsewhere") == []


def test_a_gpu_is_named_with_its_cuda_version(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    record = provenance.Session().record(torch.device("cuda", 0))
    assert record["device"] == "cuda:0"
    assert record["cuda"] == {"version": torch.version.cuda, "gpu": "Test GPU"}

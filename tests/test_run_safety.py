"""train --overwrite and --resume never lose a user's file (issue 20): a run is replaced only when
it is a physdiff run holding nothing but physdiff's files, and only after the new run has started;
a run stopped before its first checkpoint resumes from step 0."""

import json
import shutil
import string

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from conftest import one_line_error
from physdiff import checkpoint as ck
from physdiff.cli import main
from physdiff.config import Config, dump_config
from physdiff.training import METRICS_HEADER

TINY = ["--steps", "20", "--width", "8", "--timesteps", "30", "--n-train", "64", "--batch-size", "32",
        "--checkpoint-every", "10", "--device", "cpu", "--no-progress"]
QUICK = [a if a != "20" else "2" for a in TINY]


_err = one_line_error


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder`` (folders as None)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in folder.rglob("*")}


def no_siblings_left(parent):
    return not [p.name for p in parent.iterdir() if ".new-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "run"
    assert main(["train", "--dataset", "moons", "--out", str(out), *QUICK]) == 0
    return out


def test_bad_data_never_deletes_the_old_run(base_run, tmp_path, capsys):
    victim = tmp_path / "runs" / "victim"
    shutil.copytree(base_run, victim)
    before = snapshot(victim)
    np.save(tmp_path / "nan.npy", np.full((50, 2), np.nan))
    assert "NaN/inf" in _err(capsys, ["train", "--data", str(tmp_path / "nan.npy"), "--overwrite", "--out",
                                      str(victim), *TINY])
    assert "does not exist" in _err(capsys, ["train", "--data", str(tmp_path / "missing.npy"), "--overwrite",
                                             "--out", str(victim), *TINY])
    assert snapshot(victim) == before and no_siblings_left(victim.parent)


def test_a_folder_with_a_foreign_config_is_never_a_run(tmp_path, capsys, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    (here / "config.toml").write_text('title = "my other tool"\n')
    (here / "data.txt").write_text("precious")
    monkeypatch.chdir(here)
    err = _err(capsys, ["train", "--dataset", "moons", "--overwrite", "--out", ".", *TINY])
    assert "not a physdiff run" in err and "'.'" in err
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\documentclass{article}")
    (thesis / "config.toml").write_text(dump_config(Config()))  # even a config physdiff could read
    err = _err(capsys, ["train", "--dataset", "moons", "--overwrite", "--out", str(thesis), *TINY])
    assert "not a physdiff run" in err and str(thesis) in err
    assert sorted(p.name for p in here.iterdir()) == ["config.toml", "data.txt"]
    assert (thesis / "thesis.tex").read_text() == "\\documentclass{article}"
    assert sorted(p.name for p in thesis.iterdir()) == ["config.toml", "thesis.tex"]


def test_a_run_holding_a_users_file_is_refused(base_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    (run / "notes.txt").write_text("keep me")
    (run / "figs").mkdir()
    before = snapshot(run)
    err = _err(capsys, ["train", "--dataset", "moons", "--overwrite", "--out", str(run), *TINY])
    assert "'figs', 'notes.txt'" in err and "did not write" in err
    assert snapshot(run) == before


def test_overwrite_replaces_a_run_by_renames(base_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    (run / "samples.png").write_bytes(b"a figure of `physdiff plot`")
    (run / ".state.safetensors.abc.tmp").write_bytes(b"left by kill -9")
    old_weights = (run / "ema.safetensors").read_bytes()
    assert main(["train", "--dataset", "moons", "--overwrite", "--out", str(run), "--seed", "7", *QUICK]) == 0
    assert (run / "ema.safetensors").read_bytes() != old_weights
    assert sorted(p.name for p in run.iterdir()) == sorted(
        {ck.CONFIG_FILE, ck.METRICS_FILE, ck.STATE_FILE, ck.MODEL_FILE, ck.EMA_FILE, ck.LOCK_FILE, ck.MARKER_FILE,
         ck.PROVENANCE_FILE})
    assert "seed = 7" in (run / "config.toml").read_text() and no_siblings_left(tmp_path)
    # a run written before the marker (config.toml + metrics.csv of physdiff) is still recognised
    (run / ck.MARKER_FILE).unlink()
    assert main(["train", "--dataset", "moons", "--overwrite", "--out", str(run), *QUICK]) == 0
    assert (run / ck.MARKER_FILE).is_file() and no_siblings_left(tmp_path)


def test_a_run_in_use_is_not_replaced(base_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    before = snapshot(run)
    with ck.RunLock(run):
        assert "in use" in _err(capsys, ["train", "--dataset", "moons", "--overwrite", "--out", str(run), *TINY])
    assert snapshot(run) == before and no_siblings_left(tmp_path)


def test_new_run_fails_before_its_first_checkpoint_leaves_the_users_files(tmp_path, capsys, monkeypatch):
    """A new run that fails early removes only what it wrote, in a folder that held nothing."""
    from physdiff import diffusion as dif

    monkeypatch.setattr(dif, "training_loss", lambda *a, **k: a[1].sum(dim=tuple(range(1, a[1].dim()))) * np.nan)
    out = tmp_path / "empty"
    out.mkdir()  # the user's (empty) folder stays
    args = [a if a != "10" else "100" for a in TINY]
    assert "diverged" in _err(capsys, ["train", "--dataset", "moons", "--out", str(out), *args])
    assert out.is_dir() and not list(out.iterdir())


# ---------------------------------------------------------------- property: random folder contents

RUNLIKE = {ck.CONFIG_FILE: dump_config(Config()).encode(), ck.METRICS_FILE: (METRICS_HEADER + "\n").encode(),
           ck.MARKER_FILE: json.dumps({"format": ck.MARKER_FORMAT, "version": 1}).encode()}
names = st.one_of(st.sampled_from([*sorted(ck.RUN_FILES), "thesis.tex", "notes.txt", ".hidden", ".x.tmp"]),
                  st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)
                  .filter(lambda n: n not in (".", "..")))
contents = st.one_of(st.binary(max_size=64), st.sampled_from(list(RUNLIKE.values())))
entries = st.dictionaries(names, st.one_of(contents, st.dictionaries(names, contents, max_size=2)), max_size=6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=entries, real_run=st.booleans())
def test_overwrite_never_deletes_a_file_it_did_not_write(tmp_path_factory, base_run, capsys, entries, real_run):
    """Whatever a folder holds (a real run or not, with or without a user's files, files named like
    physdiff's with foreign or physdiff-like contents), `train --overwrite` into it either refuses
    and changes nothing, or replaces physdiff's own files only; a user's file is never lost."""
    parent = tmp_path_factory.mktemp("foreign")
    folder = parent / "out"
    if real_run:
        shutil.copytree(base_run, folder)
    else:
        folder.mkdir()
    for name, value in entries.items():
        path = folder / name
        if path.is_dir():
            continue
        if isinstance(value, dict):
            if path.exists():
                continue
            path.mkdir()
            for sub, data in value.items():
                (path / sub).write_bytes(data)
        else:
            path.write_bytes(value)
    before = snapshot(folder)
    code = main(["train", "--dataset", "moons", "--overwrite", "--out", str(folder), *QUICK])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err, err
    event("replaced" if code == 0 else "refused")
    after = snapshot(folder)
    if code == 2:
        assert after == before, err
    else:
        ours = {k for k in before if k in ck.RUN_FILES or ck.is_temporary(k)}
        assert ours == set(before), "a folder with a user's file was replaced"
    for k, v in before.items():
        if k.split("/")[0] not in ck.RUN_FILES and not ck.is_temporary(k):
            assert after.get(k, "gone") == v, f"{k} was lost or changed"
    assert no_siblings_left(parent)


# ---------------------------------------------------------------- resume before the first checkpoint


@pytest.mark.parametrize("marker", [True, False])
def test_resume_of_a_run_stopped_before_its_first_checkpoint(tmp_path, capsys, marker):
    """A run killed before its first checkpoint (config.toml and metrics.csv only) resumes from step 0
    and ends bitwise equal to an uninterrupted run."""
    args = [a if a != "10" else "5" for a in TINY]
    ref = tmp_path / "ref"
    assert main(["train", "--dataset", "moons", "--out", str(ref), *args]) == 0
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.toml").write_bytes((ref / "config.toml").read_bytes())
    (killed / "metrics.csv").write_text(METRICS_HEADER + "\n1,0.9,0.001,1.0,10,0.1\n")  # a row before the kill
    (killed / ".lock").touch()
    (killed / ".state.safetensors.x1.tmp").write_bytes(b"half a checkpoint")
    if marker:
        ck.write_marker(killed)
    assert "already exists; resume it" in _err(capsys, ["train", "--dataset", "moons", "--out", str(killed),
                                                        *args])
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    for f in (ck.EMA_FILE, ck.MODEL_FILE, ck.STATE_FILE):
        a, b = load_file(ref / f), load_file(killed / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    rows, ref_rows = (np.genfromtxt(r / "metrics.csv", delimiter=",", names=True, ndmin=1) for r in (killed, ref))
    assert list(rows["step"]) == list(ref_rows["step"]) and list(rows["loss"]) == list(ref_rows["loss"])
    assert not list(killed.glob(".*.tmp")) and (killed / ck.MARKER_FILE).is_file()


def test_resume_refuses_what_is_not_a_stopped_run(base_run, tmp_path, capsys):
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    (only_config / "config.toml").write_text((base_run / "config.toml").read_text())
    err = _err(capsys, ["train", "--resume", str(only_config)])
    assert "no training state" in err and "not a run that physdiff's train started" in err
    weights_only = tmp_path / "weights-only"
    shutil.copytree(base_run, weights_only)
    (weights_only / ck.STATE_FILE).unlink()
    assert "over its weights" in _err(capsys, ["train", "--resume", str(weights_only)])
    assert sorted(p.name for p in only_config.iterdir()) == ["config.toml"]


def test_the_figures_and_reports_of_plot_and_evaluate_are_the_runs_own():
    """Every figure format, the tables beside the figures and a conditioned run's tagged files are
    physdiff's (replaced with the run); a user's look-alikes are not."""
    for name in ("samples.png", "samples.pdf", "histograms.svg", "loss.csv", "evaluation.json",
                 "histograms_kappa0.2705.png", "correlator_beta0.44.csv", "evaluation_kappa1e-05.json",
                 "evaluation_kappa-0.1.json"):
        assert ck.is_run_file(name), name
    for name in ("samples_final.png", "thesis.tex", "notes.csv", "evaluation.json.bak", "histograms.png.old",
                 "my_samples.png", "evaluation_kappa.json"):
        assert not ck.is_run_file(name), name


def test_overwrite_after_plot_replaces_the_figures_and_their_tables(tmp_path, capsys):
    """plot writes figures and their .csv tables (here as pdf); train --overwrite then replaces the
    run, those included, instead of refusing them as a user's files."""
    from physdiff.cli import main

    out = tmp_path / "run"
    args = ["train", "--dataset", "moons", "--steps", "20", "--out", str(out), "--no-progress", "-q"]
    assert main(args) == 0
    assert main(["plot", str(out), "--n", "100", "--format", "pdf"]) == 0
    assert (out / "samples.csv").is_file() and (out / "samples.pdf").is_file()
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "samples.csv").exists() and not (out / "samples.pdf").exists()
    capsys.readouterr()

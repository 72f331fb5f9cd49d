"""The second round of hostile input: never lose a user's file, never show a traceback."""

import os
import stat

import numpy as np
import pytest

from conftest import one_line_error
from physdiff.cli import main

TINY = ["--steps", "20", "--width", "8", "--timesteps", "30", "--n-train", "64", "--batch-size", "32",
        "--checkpoint-every", "10", "--device", "cpu", "--no-progress"]


_err = one_line_error


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", "--dataset", "moons", "--out", str(out), *TINY]) == 0
    return out


def test_outputs_are_never_replaced_or_named_twice(run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    out.write_bytes(b"user data")
    assert "already exists" in _err(capsys, ["sample", str(run), "--n", "4", "--out", str(out)])
    assert out.read_bytes() == b"user data"
    assert "named twice" in _err(capsys, ["sample", str(run), "--n", "4", "--out", str(tmp_path / "a.npy"),
                                          "--trajectory", str(tmp_path / "a.npy")])
    assert not (tmp_path / "a.npy").exists()
    assert "already exists" in _err(capsys, ["data", "moons", "--out", str(out)])
    assert main(["data", "moons", "--n", "20", "--out", str(out), "--overwrite"]) == 0


def test_demo_never_deletes_a_users_folder(tmp_path, capsys):
    (tmp_path / "myrun").mkdir()
    (tmp_path / "notes.txt").write_text("keep me")
    assert "not an earlier demo" in _err(capsys, ["demo", "--out", str(tmp_path), "--steps", "1", "--n", "10"])
    assert (tmp_path / "notes.txt").read_text() == "keep me" and (tmp_path / "myrun").is_dir()


def test_outputs_follow_the_umask(run, tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "u.npy")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "u.npy").stat().st_mode) == 0o644


def test_resume_refusals_and_forms(run, tmp_path, capsys):
    assert "already at step 20" in _err(capsys, ["train", "--resume", str(run), "--steps", "10"])
    (run / ".state.safetensors.x.tmp").write_bytes(b"left by kill -9")
    assert main(["train", "--resume", str(run), "--steps", "30", "--no-progress"]) == 0  # the form RUN
    assert not (run / ".state.safetensors.x.tmp").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.toml").write_text((run / "config.toml").read_text())
    assert "no training state" in _err(capsys, ["train", "--resume", "--out", str(broken)])


def test_os_errors_and_odd_values_are_one_line(run, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # root ignores permissions
            assert "cannot write" in _err(capsys, ["sample", str(run), "--n", "4", "--out", str(ro / "s.npy")])
    finally:
        ro.chmod(0o700)
    assert "2**63" in _err(capsys, ["sample", str(run), "--seed", str(2**64), "--out", str(tmp_path / "a.npy")])
    assert "at least 2 samples" in _err(capsys, ["evaluate", str(run), "--n", "1"])
    assert "--lr = -0.001 is out of range" in _err(capsys, ["train", "--dataset", "moons", "--lr", "-1e-3",
                                                                 "--out", str(tmp_path / "r")])
    assert "is a folder" in _err(capsys, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r2")])
    huge = tmp_path / "huge.npy"
    np.save(huge, np.full((40, 2), 1e39))
    assert "beyond ±1e+30" in _err(capsys, ["train", "--data", str(huge), "--out", str(tmp_path / "r3")])
    assert not (tmp_path / "r3").exists()


def test_lattice_commands_refuse_bad_input(tmp_path, capsys):
    small = ["mcmc", "phi4", "--L", "4", "--kappa", "0.2", "--lam", "0", "--n", "16", "--out", str(tmp_path / "a.npy")]
    assert "fewer than 2 configurations per chain" in _err(capsys, small)
    assert not (tmp_path / "a.npy").exists()
    assert "is a folder" in _err(capsys, ["observables", str(tmp_path)])
    assert "L = 1 is out of range" in _err(capsys, ["mcmc", "ising", "--L", "1", "--beta", "0.4",
                                                      "--out", str(tmp_path / "b.npy")])


def test_failed_training_leaves_nothing(tmp_path, capsys, monkeypatch):
    from physdiff import diffusion as dif

    monkeypatch.setattr(dif, "training_loss", lambda *a, **k: a[1].sum(dim=tuple(range(1, a[1].dim()))) * np.nan)
    args = [a if a != "10" else "100" for a in TINY]  # no checkpoint before the divergence is found
    err = _err(capsys, ["train", "--dataset", "moons", "--out", str(tmp_path / "bad"), *args])
    assert "no checkpoint had been written, so the run is removed" in err
    assert not (tmp_path / "bad").exists()


def test_sizes_and_file_formats_refused_up_front(run, tmp_path, capsys):
    assert "GiB" in _err(capsys, ["sample", str(run), "--n", str(10**12), "--out", str(tmp_path / "a.npy")])
    assert "must be <= 100000" in _err(capsys, ["train", "--timesteps", "1000000000", "--out", str(tmp_path / "r")])
    text = tmp_path / "t.npy"
    text.write_text("1,2\n3,4\n")
    assert "not a NumPy .npy file" in _err(capsys, ["train", "--data", str(text), "--out", str(tmp_path / "r")])
    empty = tmp_path / "e.csv"
    empty.write_text("x,y\n")
    assert "rows" in _err(capsys, ["train", "--data", str(empty), "--out", str(tmp_path / "r")])  # one line, no warning


def test_large_samples_are_streamed_to_disk_in_chunks(run, tmp_path, capsys, monkeypatch):
    """Beyond STREAM_BYTES the samples (and log-densities) are drawn in chunks of indices into a
    memory map: the file is identical to the one drawn at once; a disk too small is refused
    before anything is drawn, and nothing is left behind."""
    import collections
    import shutil

    import physdiff.sampling as sampling

    whole, logp = tmp_path / "whole.npy", tmp_path / "whole_lp.npy"
    base = ["sample", str(run), "--n", "300", "--seed", "4", "--sampler", "ode", "--steps", "3"]
    assert main([*base, "--out", str(whole), "--log-prob", str(logp)]) == 0
    monkeypatch.setattr(sampling, "STREAM_BYTES", 1000)  # 125 two-dimensional samples a chunk
    parts, parts_lp = tmp_path / "parts.npy", tmp_path / "parts_lp.npy"
    assert main([*base, "--out", str(parts), "--log-prob", str(parts_lp)]) == 0
    assert "in chunks of 125" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(parts), np.load(whole))
    np.testing.assert_array_equal(np.load(parts_lp), np.load(logp))
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**6, 10**6 - 100, 100))
    assert "on disk" in _err(capsys, [*base, "--out", str(tmp_path / "full.npy")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts.npy", "parts_lp.npy", "whole.npy", "whole_lp.npy"]


def test_plot_and_evaluate_on_huge_values(tmp_path, capsys):
    """Data near the largest accepted magnitude (values beyond ±1e30 are refused at training)
    train, plot and evaluate without an overflow."""
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(0).normal(size=(200, 2)) * 1e29)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0
    assert main(["plot", str(out), "--n", "200"]) == 0
    assert main(["evaluate", str(out), "--n", "100"]) == 0
    assert (out / "samples.png").is_file() and "sliced_wasserstein" in capsys.readouterr().out

"""Scale-out: data-parallel training and sampling with torchrun (2 CPU processes, gloo),
mixed precision, torch.compile."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from physdiff.checkpoint import read_tensors
from physdiff.cli import main

TINY = ["--dataset", "two_gaussians", "--n-train", "2000", "--steps", "30", "--batch-size", "64", "--width", "32",
        "--depth", "2", "--timesteps", "50", "--device", "cpu", "--no-progress", "--checkpoint-every", "10"]


def torchrun(nproc: int, *args, timeout=300):
    """``torchrun --nproc-per-node N -m physdiff ARGS`` in a child process (one thread each)."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "physdiff", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def weights(run, name="model.safetensors"):
    tensors, _ = read_tensors(run / name)
    return {k: v for k, v in tensors.items() if not k.startswith("normalizer.")}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    torch.set_num_threads(1)
    try:
        assert main(["train", "--out", str(out), *TINY]) == 0
    finally:
        torch.set_num_threads(2)
    return out


def test_ddp_two_processes_match_one(single, tmp_path):
    """2 gloo processes at the same global batch end where one process does (float tolerance):
    each rank computes its half of the same global batch and DDP averages the gradients."""
    out = tmp_path / "ddp"
    proc = torchrun(2, "train", "--out", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = weights(single), weights(out)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-5, rtol=1e-4, msg=k)
    for name in ("ema.safetensors", "state.safetensors", "config.toml", "metrics.csv"):
        assert (out / name).is_file()  # rank 0 wrote them
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 1  # header + step 30 (log_every 100): one writer, no duplicates
    # resume with 2 processes continues the run
    proc = torchrun(2, "train", "--resume", "--out", str(out), "--steps", "40")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_tensors(out / "state.safetensors")[1]["step"] == "40"


def test_ddp_refuses_indivisible_batch(tmp_path):
    args = [a if a != "64" else "63" for a in TINY]
    proc = torchrun(2, "train", "--out", str(tmp_path / "r"), *args)
    assert proc.returncode != 0 and "multiple of the number of processes" in proc.stderr


def test_sampling_across_ranks_is_one_file_equal_to_one_process(single, tmp_path):
    one, two = tmp_path / "one.npy", tmp_path / "two.npy"
    assert main(["sample", str(single), "--n", "150", "--seed", "3", "--steps", "20", "--out", str(one),
                 "--device", "cpu"]) == 0
    # torchrun's own parser takes "--n" for an abbreviation of its options: the long form avoids it
    proc = torchrun(2, "sample", str(single), "--num-samples", "150", "--seed", "3", "--steps", "20", "--out", str(two),
                    "--device", "cpu", "--batch-size", "64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 processes" in proc.stdout
    np.testing.assert_allclose(np.load(two), np.load(one), atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes(tmp_path, precision):
    out = tmp_path / precision
    args = [a if a != "30" else "20" for a in TINY]
    assert main(["train", "--out", str(out), "--precision", precision, *args]) == 0
    meta = read_tensors(out / "state.safetensors")[1]
    assert ("grad_scaler" in meta) == (precision == "fp16")
    if precision == "fp16":
        assert json.loads(meta["grad_scaler"])["scale"] > 0
    assert main(["train", "--resume", "--out", str(out), "--steps", "30"]) == 0
    loss = np.genfromtxt(out / "metrics.csv", delimiter=",", names=True, ndmin=1)["loss"]
    assert np.all(np.isfinite(loss))
    for v in weights(out).values():
        assert v.dtype == torch.float32 and torch.isfinite(v).all()  # master weights stay fp32


def test_bad_precision_is_refused(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--precision", "fp8", *TINY]) == 2
    assert "allowed: fp32, bf16, fp16" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside torch's compiler stack
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_compile_matches_eager(single, tmp_path):
    out = tmp_path / "compiled"
    args = [a if a != "30" else "5" for a in TINY]
    eager = tmp_path / "eager"
    assert main(["train", "--out", str(eager), *args]) == 0
    assert main(["train", "--out", str(out), "--compile", *args]) == 0
    a, b = weights(eager), weights(out)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=1e-3, msg=k)


def test_python_m_physdiff_runs():
    proc = subprocess.run([sys.executable, "-m", "physdiff", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout

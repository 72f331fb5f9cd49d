"""Training steps/s and sampling samples/s with 1 and 2 processes (torchrun, gloo on CPU).

    .venv/bin/python benchmarks/bench_ddp.py [--steps 2000] [--n 20000]

Same global batch in both cases; 1 process uses all cores' threads (2 here), each of 2 processes
one thread. Steps/s is read from the run's metrics.csv (the last logging window, so start-up and
compilation are excluded); samples/s from `physdiff sample` (start-up included).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def physdiff(nproc: int, threads: int, *args) -> str:
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    if nproc == 1:
        cmd = [sys.executable, "-m", "physdiff", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "physdiff", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return proc.stdout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--dataset", default="spiral")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, 2):
            threads = max(1, cores // nproc)
            run = Path(tmp) / f"run{nproc}"
            physdiff(nproc, threads, "train", "--dataset", args.dataset, "--steps", str(args.steps), "--out", str(run),
                     "--device", "cpu", "--no-progress")
            m = np.genfromtxt(run / "metrics.csv", delimiter=",", names=True, ndmin=1)
            steps_per_s = float(np.median(m["steps_per_s"][1:])) if len(m) > 1 else float(m["steps_per_s"][-1])
            out = physdiff(nproc, threads, "sample", str(run), "--num-samples", str(args.n),
                           "--out", str(Path(tmp) / "s.npy"), "--device", "cpu")
            samples_per_s = float(re.search(r"(\d+) samples/s", out).group(1))
            rows.append((nproc, threads, steps_per_s, samples_per_s))
            print(f"{nproc} process(es) × {threads} thread(s): {steps_per_s:.0f} train steps/s, "
                  f"{samples_per_s:.0f} samples/s (DDPM, T = 1000)", flush=True)
    base = rows[0]
    for nproc, threads, sps, smp in rows:
        print(f"| {nproc} | {threads} | {sps:.0f} | {sps / base[2]:.2f} | {smp:.0f} | {smp / base[3]:.2f} |")


if __name__ == "__main__":
    main()

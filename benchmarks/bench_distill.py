"""Progressive distillation (`physdiff distill`) on the 2D default runs: sliced W2 / noise floor
of the students at 1, 2, 4 and 8 network evaluations, beside the run's own network at the same
NFE (DDIM on the students' grid: what the student replaces; UniPC on logSNR steps: physdiff's
best plain fast sampler) and DDPM on all 1000 steps.

    .venv/bin/python benchmarks/bench_distill.py [--datasets spiral,moons] [--runs DIR] [--seeds 2]
        [--base 256] [--iterations 2000] [--lr 5e-4]
    .venv/bin/python benchmarks/bench_distill.py --teachers   # then: the first teacher, the converged flow

The runs are those of bench_fitted_steps.py (`physdiff train --dataset NAME` at the defaults,
kept in --runs DIR and trained there when absent); the students are written into a copy of each
run (--work DIR2/NAME), so the runs themselves are unchanged. Each cell: n = 10 000 samples
for sample seeds 1 and 2, the sliced W2 against R = 4 fresh true sets divided by the floor, as
bench_samplers.py. Results: benchmarks/distill.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_samplers import reference_ratio

from physdiff import checkpoint as ck
from physdiff.config import Config
from physdiff.data import TOY_DATASETS
from physdiff.distill import distill_run
from physdiff.run import LoadedRun
from physdiff.training import train

STEPS = (1, 2, 4, 8)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default=",".join(TOY_DATASETS))
    p.add_argument("--runs", default="/tmp/physdiff-bench/fitted", help="folder of the default runs (reused)")
    p.add_argument("--work", default="/tmp/physdiff-bench/distilled", help="folder of the copies distilled")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seeds", type=int, default=2, help="sample seeds per cell")
    p.add_argument("--base", type=int, default=None)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/distill.json")
    p.add_argument("--teachers", action="store_true",
                   help="add to --out the first teacher (DDIM on the base grid) and the converged flow (unipc on "
                   "200 logSNR steps) of the runs distilled before, in --work")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    cols = [f"{c} {k}" for k in STEPS for c in ("distilled", "ddim", "unipc")]
    print("| dataset | ddpm 1000 | " + " | ".join(cols) + " | distill s |")
    print("|---" * (len(cols) + 3) + "|")
    if args.teachers:
        return teachers(args, results)
    for ds in args.datasets.split(","):
        src = Path(args.runs) / ds
        if not (src / ck.EMA_FILE).exists():
            train(Config().with_overrides({"data.dataset": ds, "train.device": "cpu"}), src, progress=False)
        path = Path(args.work) / ds
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(src, path, ignore=shutil.ignore_patterns(ck.DISTILLED_FILE, ck.TIMESTEPS_FILE))
        run = LoadedRun(path, device="cpu")
        t0 = time.perf_counter()
        d = distill_run(run, STEPS, base=args.base, iterations=args.iterations, lr=args.lr, progress=False)
        row = {"distill_s": time.perf_counter() - t0, "base": d.base, "iterations": d.iterations, "lr": d.lr,
               "rounds": [vars(r) for r in d.rounds], "grids": {str(k): g for k, g in d.grids.items()}}
        _, n, ratio = reference_ratio(run, args.n)
        cells = {"ddpm 1000": ("ddpm", {})}
        for k in STEPS:
            cells[f"distilled {k}"] = ("distilled", {"steps": k})
            cells[f"ddim {k}"] = ("ddim", {"timesteps": d.grids[k]})
            cells[f"unipc {k}"] = ("unipc", {"steps": k, "spacing": "logsnr"})
        for label, (sampler, options) in cells.items():
            ratios = [ratio(run.sample(n, seed, sampler=sampler, **options).samples)
                      for seed in range(1, args.seeds + 1)]
            row[label] = {"ratios": ratios, "mean": float(np.mean(ratios)), "spread": float(np.std(ratios))}
        results[ds] = row
        shown = [f"{row['ddpm 1000']['mean']:.2f}"] + [f"{row[c]['mean']:.2f}" for c in cols]
        print(f"| {ds} | " + " | ".join(shown) + f" | {row['distill_s']:.0f} |", flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def teachers(args, results):
    """What the students were trained to reproduce, beside them: the first teacher (the run's
    network with DDIM on the base grid) and the run's flow solved to convergence."""
    from physdiff.distill import distillation_grid

    print("| dataset | ddpm 1000 | first teacher (ddim base) | unipc 200 | distilled 1 | distilled 8 |")
    print("|---" * 6 + "|")
    for ds in args.datasets.split(","):
        row = results[ds]
        run = LoadedRun(Path(args.work) / ds, device="cpu")
        _, n, ratio = reference_ratio(run, args.n)
        base = row["base"]
        cells = {f"ddim {base} (first teacher)": ("ddim", {"timesteps": distillation_grid(run.schedule, base, base)}),
                 "unipc 200": ("unipc", {"steps": 200, "spacing": "logsnr"})}
        for label, (sampler, options) in cells.items():
            ratios = [ratio(run.sample(n, seed, sampler=sampler, **options).samples)
                      for seed in range(1, args.seeds + 1)]
            row[label] = {"ratios": ratios, "mean": float(np.mean(ratios)), "spread": float(np.std(ratios))}
        shown = [row[c]["mean"] for c in ("ddpm 1000", *cells, "distilled 1", "distilled 8")]
        print(f"| {ds} | " + " | ".join(f"{v:.2f}" for v in shown) + " |", flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Fitted timesteps (`physdiff fit-steps`) against logSNR-uniform ones on every 2D default run:
sliced W2 / noise floor of UniPC at 10 and 20 NFE on both, beside DDPM at 1000 and UniPC converged
(200 NFE), the fit's own figures (global error before and after on held-out x_T, runs, seconds).

    .venv/bin/python benchmarks/bench_fitted_steps.py [--datasets spiral,moons] [--runs DIR] [--seeds 2]

Per dataset: train with the defaults (`physdiff train --dataset NAME`; kept in --runs DIR and
reused when there), fit unipc's steps at 10 and 20 NFE (`LoadedRun.fit_steps`, its defaults:
orders 2 and 3, 1024 draws of x_T to fit on and 1024 to check on, from seed 1000), then for each
cell and sample seed (1, 2) draw n = 10 000 samples and compute the sliced W2 against R = 4 fresh
true sets divided by the floor, as bench_samplers.py. Results: benchmarks/fitted_steps.json and
the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_samplers import reference_ratio

from physdiff.config import Config
from physdiff.data import TOY_DATASETS
from physdiff.fitted_steps import fit_steps
from physdiff.run import LoadedRun
from physdiff.training import train

FIT_SEED = 1000
CELLS = {  # label: (sampler, options); "fitted" cells run after the fit, with no spacing given
    "ddpm 1000": ("ddpm", {}),
    "unipc 10 logsnr": ("unipc", {"steps": 10, "spacing": "logsnr"}),
    "unipc 10 fitted": ("unipc", {"steps": 10, "spacing": "fitted"}),
    "unipc 20 logsnr": ("unipc", {"steps": 20, "spacing": "logsnr"}),
    "unipc 20 fitted": ("unipc", {"steps": 20, "spacing": "fitted"}),
    "unipc 200": ("unipc", {"steps": 200, "spacing": "logsnr"}),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default=",".join(TOY_DATASETS))
    p.add_argument("--runs", default="/tmp/physdiff-bench/fitted", help="folder of the default runs (reused)")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seeds", type=int, default=2, help="sample seeds per cell")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/fitted_steps.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    print("| dataset | " + " | ".join(CELLS) + " | fit 10: error before → after (s) | fit 20 |")
    print("|---" * (len(CELLS) + 3) + "|")
    for ds in args.datasets.split(","):
        path = Path(args.runs) / ds
        t0 = time.perf_counter()
        if not (path / "ema.safetensors").exists():
            train(Config().with_overrides({"data.dataset": ds, "train.device": "cpu"}), path, progress=False)
        run = LoadedRun(path, device="cpu")
        row = {"train_s": time.perf_counter() - t0}
        for steps in (10, 20):
            fit = fit_steps(run, "unipc", steps, seed=FIT_SEED)
            row[f"fit {steps}"] = {"timesteps": fit.timesteps, "start": fit.start, "error_start": fit.error_start,
                                   "error_fitted": fit.error_fitted, "kept": fit.kept, "runs": fit.evaluations,
                                   "seconds": fit.seconds}
        _, n, ratio = reference_ratio(run, args.n)
        for label, (sampler, options) in CELLS.items():
            ratios = [ratio(run.sample(n, seed, sampler=sampler, **options).samples)
                      for seed in range(1, args.seeds + 1)]
            row[label] = {"ratios": ratios, "mean": float(np.mean(ratios)), "spread": float(np.std(ratios))}
        results[ds] = row
        cells = [f"{row[c]['mean']:.2f} ± {row[c]['spread']:.2f}" for c in CELLS]
        fits = [f"{row[f'fit {k}']['error_start']:.2g} → {row[f'fit {k}']['error_fitted']:.2g} "
                f"({row[f'fit {k}']['seconds']:.0f})" for k in (10, 20)]
        print(f"| {ds} | " + " | ".join(cells + fits) + " |", flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

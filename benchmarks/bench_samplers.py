"""Every advertised sampler on default runs: sliced W2 / noise floor for DDPM (1000 steps),
DPM-Solver++(2M) and UniPC-2 and -3 (20 and 10 NFE), DDIM (50 NFE) and the probability-flow ODE
(RK4, 48 NFE for the default v-prediction), on every 2D
dataset at the default settings (`physdiff train --dataset NAME`), with far outliers counted.

    .venv/bin/python benchmarks/bench_samplers.py [--datasets spiral,moons] [--seeds 3] [--n 10000]

Per dataset: train with the defaults (about 1 min on 2 cores), then for each sampler and sample
seed draw n samples and compute the sliced W2 against R = 4 fresh true sets (physdiff's
reference policy, ``evaluation/references.py``), divided by the floor (the same distance between
R pairs of independent true sets). Prints a Markdown table (mean ± spread over seeds) and, for
two_gaussians, the mode weights with their binomial errors and the per-mode moments, for the
trained model and for the exact denoiser sampled the same way (training vs sampling).
Results: benchmarks/samplers_defaults.json; the tables in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from physdiff.analytic import GaussianMixture, OptimalEpsilon
from physdiff.config import Config
from physdiff.data import TOY_DATASETS, get_toy
from physdiff.evaluation.references import reference_sets
from physdiff.evaluation.vectors import outlier_share
from physdiff.metrics import sliced_wasserstein
from physdiff.run import LoadedRun
from physdiff.samplers import run_sampler
from physdiff.training import train

CELLS = {  # label: (sampler, options)
    "ddpm 1000": ("ddpm", {}),
    "dpm-solver 20": ("dpm-solver", {"steps": 20}),
    "unipc-2 20": ("unipc", {"steps": 20, "order": 2}),
    "unipc-3 20": ("unipc", {"steps": 20, "order": 3}),
    "dpm-solver 10": ("dpm-solver", {"steps": 10}),
    "unipc-2 10": ("unipc", {"steps": 10, "order": 2}),
    "unipc-3 10": ("unipc", {"steps": 10, "order": 3}),
    "ddim 50": ("ddim", {"steps": 50}),
    "ode": ("ode", {}),
}


def reference_ratio(run: LoadedRun, n: int, repeats: int = 4):
    """(refs, n, ratio): ``repeats`` fresh true sets of n (physdiff's reference policy), and
    ratio(x) = the mean sliced W2 of samples x (data units) to them divided by the floor (the rms
    of the same distance between pairs of true sets)."""
    refs, floors, _, n = reference_sets(run, n, 0, repeats=repeats)
    floor = float(np.sqrt(np.mean([sliced_wasserstein(a, b) ** 2 for a, b in zip(floors, refs, strict=True)])))

    def ratio(x: np.ndarray) -> float:
        return float(np.mean([sliced_wasserstein(x, r) for r in refs])) / floor

    return refs, n, ratio


def mode_stats(x: np.ndarray) -> dict:
    """two_gaussians (modes at x₁ = ±2): share of the left mode with its binomial error, and the
    mean and covariance of each mode."""
    left = x[:, 0] < 0
    p = float(left.mean())
    out = {"left_share": p, "left_share_err": float(np.sqrt(p * (1 - p) / len(x)))}
    for name, sel in (("left", left), ("right", ~left)):
        out[f"{name}_mean"] = x[sel].mean(0).round(4).tolist()
        out[f"{name}_cov"] = np.cov(x[sel], rowvar=False).round(4).tolist()
    return out


def exact_mode_check(run: LoadedRun, n: int, seed: int) -> dict:
    """The same DDPM sampler driven by the exact denoiser of two_gaussians (in network units)."""
    toy = get_toy("two_gaussians")
    shift, scale = run.normalizer.shift.numpy(), run.normalizer.scale.numpy()
    mix = toy.mixture
    means = (mix.means.numpy() - shift) / scale
    covs = mix.covs.numpy() / np.outer(scale, scale)
    eps = OptimalEpsilon(GaussianMixture(means, covs, mix.weights.numpy()), run.schedule)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, 2, generator=g, dtype=torch.float64)
    res = run_sampler("ddpm", eps, run.schedule, x_T, generator=g)
    return mode_stats(run.normalizer.decode(res.samples).numpy())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default=",".join(d for d in TOY_DATASETS))
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seeds", type=int, default=2, help="sample seeds per cell")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/samplers_defaults.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    print("| dataset | " + " | ".join(CELLS) + " | far outliers (worst cell) |")
    print("|---" * (len(CELLS) + 2) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for ds in args.datasets.split(","):
            t0 = time.perf_counter()
            run = LoadedRun(train(Config().with_overrides({"data.dataset": ds, "train.device": "cpu"}),
                                  Path(tmp) / ds, progress=False))
            train_s = time.perf_counter() - t0
            refs, n, ratio = reference_ratio(run, args.n)
            row, worst_outliers = {}, 0.0
            for label, (sampler, options) in CELLS.items():
                ratios, nfe = [], None
                for seed in range(1, args.seeds + 1):
                    res = run.sample(n, seed, sampler=sampler, **options)
                    x, nfe = res.samples, res.nfe
                    ratios.append(ratio(x))
                    worst_outliers = max(worst_outliers, outlier_share(x, refs[0]))
                    if ds == "two_gaussians":
                        row.setdefault(f"{label}_modes", []).append(mode_stats(x))
                row[label] = {"nfe": nfe, "ratios": ratios, "mean": float(np.mean(ratios)),
                                "spread": float(np.std(ratios))}
            if ds == "two_gaussians":
                row["exact_denoiser_ddpm_modes"] = [exact_mode_check(run, n, seed) for seed in range(1, 4)]
                row["training_set_modes"] = mode_stats(get_toy(ds).sample(run.cfg.data.n_train, run.cfg.data.seed))
            row["far_outlier_share_worst"] = worst_outliers
            row["train_s"] = train_s
            results[ds] = row
            cells = [f"{row[c]['mean']:.2f} ± {row[c]['spread']:.2f}" for c in CELLS]
            print(f"| {ds} | " + " | ".join(cells) + f" | {worst_outliers:.2%} |", flush=True)
            Path(args.out).write_text(json.dumps(results, indent=2))
    if "two_gaussians" in results:
        r = results["two_gaussians"]
        print("\ntwo_gaussians, share of the left mode (true 0.5):")
        for key in [k for k in r if k.endswith("_modes")]:
            stats = r[key] if isinstance(r[key], list) else [r[key]]
            print(f"  {key}: " + ", ".join(f"{s['left_share']:.4f} ± {s['left_share_err']:.4f}" for s in stats))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

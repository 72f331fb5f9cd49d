"""Quality against cost: sliced W2 / noise floor against NFE for each sampler, on trained 2D
models; plus bits/dim (variational bound, ODE) and KL(p_data ‖ p_model) where defined.

    .venv/bin/python benchmarks/bench_samplers.py [--steps 20000 --width 256] [--out benchmarks/samplers.png]

Trains spiral, moons and two_gaussians (about 5 min each on 2 cores at 20 000 steps, width 256; the
default 6000-step, width-128 models leave score errors that deterministic samplers integrate, see
benchmarks/README.md). Only the sliced W2 is computed (against 5 fresh true sets; floor from 5 pairs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from physdiff.cli import nll_report
from physdiff.config import Config
from physdiff.data import get_toy
from physdiff.metrics import sliced_wasserstein
from physdiff.run import LoadedRun
from physdiff.training import train

NFES = (5, 10, 20, 50, 100, 1000)
SAMPLERS = ("ddpm", "ddim", "dpm-solver")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/samplers.png")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--steps", type=int, default=20000, help="training steps")
    p.add_argument("--width", type=int, default=256, help="ResMLP width")
    p.add_argument("--datasets", default="spiral,moons,two_gaussians")
    p.add_argument("--prediction", default="eps", help="what the network predicts: eps, x0 or v")
    p.add_argument("--seeds", type=int, default=1, help="sample seeds averaged per cell")
    args = p.parse_args()
    torch.set_num_threads(2)
    results = {}
    datasets = args.datasets.split(",")
    fig = Figure(figsize=(4.4 * len(datasets), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(datasets), sharey=True))
    with tempfile.TemporaryDirectory() as tmp:
        for ax, ds in zip(axes, datasets, strict=True):
            cfg = Config().with_overrides({"data.dataset": ds, "train.device": "cpu", "train.steps": args.steps,
                                           "model.width": args.width, "diffusion.prediction": args.prediction})
            run = LoadedRun(train(cfg, Path(tmp) / ds, progress=False))
            toy = get_toy(ds)
            refs = [toy.sample(args.n, 1_000_003 + 2 * r) for r in range(5)]
            floor = float(np.sqrt(np.mean([sliced_wasserstein(a, toy.sample(args.n, 1_000_004 + 2 * r)) ** 2
                                           for r, a in enumerate(refs)])))

            def ratio(samples, refs=refs, floor=floor):
                return float(np.mean([sliced_wasserstein(samples, r) for r in refs])) / floor

            def mean_ratio(run=run, ratio=ratio, **kw):
                return float(np.mean([ratio(run.sample(args.n, seed, **kw)[0]) for seed in range(args.seeds)]))

            rows = {}
            for sampler in SAMPLERS:
                for k in NFES:
                    rows[(sampler, k)] = mean_ratio(sampler=sampler, steps=k)
                ax.plot(NFES, [rows[(sampler, k)] for k in NFES], marker="o", label=sampler)
            rows[("ode", "adaptive")] = mean_ratio(sampler="ode")
            nfe = run.last_nfe
            ax.scatter([nfe], [rows[("ode", "adaptive")]], marker="*", s=140, color="k",
                       label="ode (RK45, adaptive)", zorder=3)
            rows[("ode_nfe", "")] = nfe
            ax.axhline(1.0, color="gray", ls=":", lw=1)
            ax.set(xscale="log", xlabel="network evaluations (NFE)", title=ds)
            ax.grid(alpha=0.3, which="both")
            nll = nll_report(run, 1000, 0)
            results[ds] = {"sw_ratio": {f"{s}@{k}": v for (s, k), v in rows.items()}, "nll": nll}
            print(ds, json.dumps({f"{s}@{k}": round(v, 3) for (s, k), v in rows.items()}), flush=True)
            print(ds, "VB bits/dim", round(nll["vb_bits_per_dim"], 4), "ODE bits/dim",
                  round(nll["ode_bits_per_dim"], 4), "KL", nll.get("kl_data_model_nats"), flush=True)
    axes[0].set_ylabel(f"sliced W2 / noise floor (mean of {args.seeds} sample seed{'s' * (args.seeds > 1)})")
    axes[0].legend()
    fig.suptitle(f"Sample quality against cost (n = {args.n}; 1 = as good as the data can tell; "
                 f"ResMLP width {args.width}, {args.steps} steps, {args.prediction}-prediction)")
    fig.savefig(args.out, dpi=120)
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Quality against cost: sliced W2 / noise floor against NFE for each sampler, on trained 2D
models; plus bits/dim (variational bound, ODE) and KL(p_data ‖ p_model) where defined.

    .venv/bin/python benchmarks/bench_samplers.py [--out benchmarks/samplers.png]

Trains spiral, moons and two_gaussians at default settings (about 30 s each on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from physdiff.cli import evaluate_run, nll_report
from physdiff.config import Config
from physdiff.run import LoadedRun
from physdiff.train import train

NFES = (5, 10, 20, 50, 100, 1000)
SAMPLERS = ("ddpm", "ddim", "dpm-solver")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/samplers.png")
    p.add_argument("--n", type=int, default=5000)
    args = p.parse_args()
    torch.set_num_threads(2)
    results = {}
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    with tempfile.TemporaryDirectory() as tmp:
        for ax, ds in zip(axes, ("spiral", "moons", "two_gaussians"), strict=True):
            run = LoadedRun(train(Config().with_overrides({"data.dataset": ds, "train.device": "cpu"}),
                                  Path(tmp) / ds, progress=False))
            rows = {}
            for sampler in SAMPLERS:
                for k in NFES:
                    ratios = []
                    for seed in range(1):  # one seed (budget); see benchmarks/README.md
                        m = evaluate_run(run, args.n, seed, sampler_args={"sampler": sampler, "steps": k})
                        sw = m["metrics"]["sliced_wasserstein"]
                        ratios.append(sw["value"] / sw["floor"])
                    rows[(sampler, k)] = float(np.mean(ratios))
                ax.plot(NFES, [rows[(sampler, k)] for k in NFES], marker="o", label=sampler)
            ode = evaluate_run(run, 2000, 0, sampler_args={"sampler": "ode", "steps": None})
            sw = ode["metrics"]["sliced_wasserstein"]
            rows[("ode", run.last_nfe)] = sw["value"] / sw["floor"]
            ax.scatter([run.last_nfe], [rows[("ode", run.last_nfe)]], marker="*", s=120, color="k",
                       label="ode (RK45, n=2000)", zorder=3)
            ax.axhline(1.0, color="gray", ls=":", lw=1)
            ax.set(xscale="log", xlabel="network evaluations (NFE)", title=ds)
            ax.grid(alpha=0.3, which="both")
            nll = nll_report(run, 1000, 0)
            results[ds] = {"sw_ratio": {f"{s}@{k}": v for (s, k), v in rows.items()}, "nll": nll}
            print(ds, json.dumps({f"{s}@{k}": round(v, 3) for (s, k), v in rows.items()}), flush=True)
            print(ds, "VB bits/dim", round(nll["vb_bits_per_dim"], 4), "ODE bits/dim",
                  round(nll["ode_bits_per_dim"], 4), "KL", nll.get("kl_data_model_nats"), flush=True)
    axes[0].set_ylabel("sliced W2 / noise floor (one seed)")
    axes[0].legend()
    fig.suptitle("Sample quality against cost (n = 5000; 1 = as good as the data can tell)")
    fig.savefig(args.out, dpi=120)
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

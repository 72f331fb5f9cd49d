"""Fast samplers' own discretisation error, with no network in it: each sampler driven by the
exact denoiser (``analytic.OptimalEpsilon``) of a Gaussian mixture, against NFE.

    .venv/bin/python benchmarks/bench_exact_samplers.py [--nfe 5,10,15,20,30,50,100] [--n 10000]

Densities (standardised per coordinate, as physdiff's normaliser does for a run): ``gaussian``,
``two_gaussians``, ``eight_gaussians`` and ``spiral``, a mixture of 24 narrow Gaussians along
the spiral, whose exact score the mixture formula gives. Samplers: DDIM (η = 0), DPM-Solver++(2M)
and (3M) (the authors' coefficients, and the taylor variant exact for quadratic x̂₀), UniPC-2 and -3 (bh2)
on logSNR-uniform steps, 2M and UniPC-3 on quadratic steps, UniPC-3 on Karras steps, UniPC-2
bh1, UniPC-2 on timesteps fitted to the density (``fitted_steps.fit_timesteps`` on 1024 + 1024
draws of x_T other than the cells' x_T), SDE-DPM-Solver++(2M), the probability-flow ODE (RK4, 4
NFE a step) and ancestral DDPM. ``--cells`` runs some rows and keeps the others of --out.
Per cell: sliced W2 to a fresh true set divided by the floor (the same distance between
two true sets; mean over --refs references) and the largest covariance error. The same x_T for
every sampler. Prints Markdown tables; writes benchmarks/exact_samplers.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from physdiff.analytic import GaussianMixture, OptimalEpsilon
from physdiff.data import get_toy
from physdiff.fitted_steps import fit_timesteps
from physdiff.metrics import sliced_wasserstein
from physdiff.samplers import run_sampler
from physdiff.schedule import make_schedule
from physdiff.seeding import generator


def spiral_mixture(k: int = 24) -> GaussianMixture:
    """k narrow Gaussians along an Archimedean spiral (a spiral-like density with an exact score)."""
    t = np.linspace(1.0, 4.5 * np.pi, k)
    means = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 3.0
    return GaussianMixture(means, np.stack([np.eye(2) * 0.04] * k))


def standardised(mix: GaussianMixture) -> GaussianMixture:
    """The mixture after x ↦ (x − mean) / std per coordinate."""
    rng = np.random.default_rng(0)
    x = mix.sample(200_000, rng)
    mu, sd = x.mean(0), x.std(0)
    means = (mix.means.numpy() - mu) / sd
    covs = mix.covs.numpy() / np.outer(sd, sd)
    return GaussianMixture(means, covs, mix.weights.numpy())


class SortedProjections:
    """Sliced W2 against fixed references, each sorted once: the same number as
    ``metrics.sliced_wasserstein(x, ref)`` (same 512 directions, seed 0) at an eighth of the cost."""

    def __init__(self, refs: list[np.ndarray], n_projections: int = 512):
        theta = torch.randn(refs[0].shape[1], n_projections, generator=generator(0), dtype=torch.float64)
        self.theta = theta / theta.norm(dim=0, keepdim=True)
        self.refs = [self.project(r) for r in refs]

    def project(self, x: np.ndarray) -> torch.Tensor:
        return torch.sort(torch.as_tensor(x, dtype=torch.float64) @ self.theta, dim=0)[0]

    def mean_distance(self, x: np.ndarray) -> float:
        px = self.project(x)
        return float(np.mean([float(((px - r) ** 2).mean().sqrt()) for r in self.refs]))


def density_case(name: str, sched, n: int, n_refs: int):
    """One benchmark density: its exact denoiser, n_refs + 1 true sets of n (the first for the floor),
    the floor, the sorted references and the common x_T: (mix, eps, refs, floor, sw2, x_T)."""
    mix = standardised(spiral_mixture() if name == "spiral" else get_toy(name).mixture)
    eps = OptimalEpsilon(mix, sched)
    rng = np.random.default_rng(1)
    refs = [mix.sample(n, rng) for _ in range(n_refs + 1)]
    floor = np.mean([sliced_wasserstein(refs[0], r) for r in refs[1:]])
    sw2 = SortedProjections(refs[1:])
    assert abs(sw2.mean_distance(refs[0]) - floor) < 1e-12 * floor
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return mix, eps, refs, floor, sw2, x_T


CELLS = {  # label: (sampler, options as a function of the NFE budget, or None where it does not fit)
    "ddim": ("ddim", lambda k: {"steps": k}),
    "dpm-solver++(2M)": ("dpm-solver", lambda k: {"steps": k, "order": 2}),
    "dpm-solver++(3M)": ("dpm-solver", lambda k: {"steps": k, "order": 3}),
    "dpm-solver++(3M) taylor": ("dpm-solver", lambda k: {"steps": k, "order": 3, "variant": "taylor"}),
    "dpm-solver++(2M) quadratic": ("dpm-solver", lambda k: {"steps": k, "order": 2, "spacing": "quadratic"}),
    "unipc-2": ("unipc", lambda k: {"steps": k, "order": 2}),
    "unipc-3": ("unipc", lambda k: {"steps": k, "order": 3}),
    "unipc-3 quadratic": ("unipc", lambda k: {"steps": k, "order": 3, "spacing": "quadratic"}),
    "unipc-3 karras": ("unipc", lambda k: {"steps": k, "order": 3, "spacing": "karras"}),
    "unipc-2 bh1": ("unipc", lambda k: {"steps": k, "order": 2, "variant": "bh1"}),
    "unipc-2 fitted": ("unipc", lambda k: {"steps": k, "order": 2, "fitted": True} if k >= 3 else None),
    "sde-dpm-solver++(2M)": ("sde-dpm-solver", lambda k: {"steps": k}),
    "ode rk4": ("ode", lambda k: {"steps": k // 4} if k >= 4 and k % 4 == 0 else None),
    "ddpm": ("ddpm", lambda k: {"steps": k}),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nfe", default="5,10,15,20,30,50,100")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--refs", type=int, default=4)
    p.add_argument("--schedule", default="linear")
    p.add_argument("--datasets", default="gaussian,two_gaussians,eight_gaussians,spiral")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cells", default=",".join(CELLS), help="rows to run (the others are kept from --out)")
    p.add_argument("--out", default="benchmarks/exact_samplers.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sched = make_schedule(args.schedule, 1000)
    budgets = [int(k) for k in args.nfe.split(",")]
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    chosen = {c: CELLS[c] for c in args.cells.split(",")}
    for name in args.datasets.split(","):
        _, eps, refs, floor, sw2, x_T = density_case(name, sched, args.n, args.refs)
        cov = np.cov(np.concatenate(refs), rowvar=False)
        table = results.get(name, {})
        for label, (sampler, opts) in chosen.items():
            table[label] = {}
            for k in budgets:
                kw = opts(k)
                if kw is None:
                    continue
                t0 = time.perf_counter()
                if kw.pop("fitted", False):
                    g = torch.Generator().manual_seed(4)
                    draws = [torch.randn(1024, 2, generator=g, dtype=torch.float64) for _ in range(2)]

                    def solve(x, taus, kw=kw, sampler=sampler, eps=eps):
                        return run_sampler(sampler, eps, sched, x, prediction="eps", timesteps=taus,
                                           **{k_: v for k_, v in kw.items() if k_ != "steps"}).samples

                    kw["timesteps"] = fit_timesteps(solve, sched, k, *draws).timesteps
                x = run_sampler(sampler, eps, sched, x_T, prediction="eps",
                                generator=torch.Generator().manual_seed(3), **kw).samples.numpy()
                sw = sw2.mean_distance(x) / floor
                table[label][k] = {"sw2_over_floor": float(sw),
                                                  "cov_error": float(np.abs(np.cov(x, rowvar=False) - cov).max()),
                                                  "seconds": time.perf_counter() - t0}
        results[name] = table
        print(f"\n### {name} (exact denoiser, {args.schedule} schedule, n = {args.n}): sliced W2 / floor "
              "(largest covariance error)")
        print("| sampler | " + " | ".join(f"NFE {k}" for k in budgets) + " |")
        print("| --- |" + " --- |" * len(budgets))
        for label, row in table.items():
            row = {int(k): v for k, v in row.items()}  # keys of a reloaded JSON are strings
            cells = [f"{row[k]['sw2_over_floor']:.2f} ({row[k]['cov_error']:.3f})" if k in row else "–"
                     for k in budgets]
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""physdiff's fast samplers side by side with diffusers' schedulers: the same denoiser, the same
schedule, the same x_T, the same NFE.

    pip install -e '.[compare]'    # diffusers, pinned in constraints.txt; physdiff itself does not need it
    .venv/bin/python benchmarks/bench_diffusers.py --threads 1 [--nfe 10,15,20,30] [--n 10000]

The denoiser is the exact ε of each density of ``bench_exact_samplers.py`` (no network error, so the
comparison is of the samplers alone), with diffusers given physdiff's own β table
(``trained_betas``). diffusers' schedulers are run with their documented settings
(``timestep_spacing`` "linspace", ``final_sigmas_type`` "zero", ``lower_order_final``) and with the
variants its docs recommend for few steps (Lu's logSNR-uniform λ, Karras σ). Per cell: sliced W2 / floor
as in ``bench_exact_samplers.py``. Prints Markdown tables; writes benchmarks/diffusers_compare.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_exact_samplers import density_case

from physdiff.samplers import run_sampler
from physdiff.schedule import make_schedule

PHYSDIFF = {  # label: (sampler, options)
    "physdiff unipc-2": ("unipc", {"order": 2}),
    "physdiff unipc-3": ("unipc", {"order": 3}),
    "physdiff dpm-solver++(2M)": ("dpm-solver", {"order": 2}),
    "physdiff dpm-solver++(3M)": ("dpm-solver", {"order": 3}),
    "physdiff ddim": ("ddim", {}),
}


def diffusers_cells():
    """label: a function of the β table giving a configured diffusers scheduler."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    common = {"num_train_timesteps": 1000, "prediction_type": "epsilon"}

    def dpm(**kw):
        return lambda betas: DPMSolverMultistepScheduler(trained_betas=betas, algorithm_type="dpmsolver++",
                                                         final_sigmas_type="zero", **common, **kw)

    def unipc(**kw):
        return lambda betas: UniPCMultistepScheduler(trained_betas=betas, final_sigmas_type="zero", **common, **kw)

    return {
        "diffusers UniPC-2 (bh2)": unipc(solver_order=2),
        "diffusers UniPC-3 (bh2)": unipc(solver_order=3),
        "diffusers UniPC-2 (bh2) Karras": unipc(solver_order=2, use_karras_sigmas=True),
        "diffusers DPM-Solver++(2M)": dpm(solver_order=2),
        "diffusers DPM-Solver++(2M) logSNR": dpm(solver_order=2, use_lu_lambdas=True),
        "diffusers DPM-Solver++(2M) Karras": dpm(solver_order=2, use_karras_sigmas=True),
        "diffusers DPM-Solver++(3M)": dpm(solver_order=3),
        "diffusers DDIM": lambda betas: DDIMScheduler(trained_betas=betas, clip_sample=False, set_alpha_to_one=True,
                                                      **common),
    }


@torch.no_grad()
def run_diffusers(scheduler, eps, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """The standard diffusers loop: K evaluations of ε at the scheduler's (integer) timesteps."""
    scheduler.set_timesteps(steps)
    x = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        tt = torch.full((len(x),), int(t), dtype=torch.long)
        x = scheduler.step(eps(scheduler.scale_model_input(x, t), tt), t, x).prev_sample
    return x


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nfe", default="10,15,20,30")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--refs", type=int, default=4)
    p.add_argument("--datasets", default="gaussian,two_gaussians,eight_gaussians,spiral")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/diffusers_compare.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import diffusers

    sched = make_schedule("linear", 1000)
    betas = sched.betas.double().numpy()
    budgets = [int(k) for k in args.nfe.split(",")]
    results = {"diffusers_version": diffusers.__version__}
    for name in args.datasets.split(","):
        _, eps, _, floor, sw2, x_T = density_case(name, sched, args.n, args.refs)
        table = {}
        for label, (sampler, opts) in PHYSDIFF.items():
            for k in budgets:
                x = run_sampler(sampler, eps, sched, x_T, prediction="eps", steps=k, **opts).samples.numpy()
                table.setdefault(label, {})[k] = sw2.mean_distance(x) / floor
        for label, make in diffusers_cells().items():
            for k in budgets:
                x = run_diffusers(make(betas), eps, x_T, k).numpy()
                table.setdefault(label, {})[k] = sw2.mean_distance(x) / floor
        results[name] = table
        print(f"\n### {name} (exact denoiser, linear schedule, n = {args.n}, same x_T): sliced W2 / floor")
        print("| sampler | " + " | ".join(f"NFE {k}" for k in budgets) + " |")
        print("| --- |" + " --- |" * len(budgets))
        for label, row in table.items():
            print(f"| {label} | " + " | ".join(f"{row[k]:.2f}" for k in budgets) + " |", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

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

With ``--runs DIR`` the denoiser is instead the trained network of each default run in DIR (those of
``bench_fitted_steps.py``, v-prediction, given to diffusers as ``prediction_type="v_prediction"``), in
network units from the same x_T, decoded and compared with R = 4 fresh true sets as ``bench_samplers.py``;
physdiff's cells add UniPC on the run's fitted timesteps where the run has them (``physdiff fit-steps``).
Writes benchmarks/diffusers_trained.json.
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


def diffusers_cells(prediction_type: str = "epsilon"):
    """label: a function of the β table giving a configured diffusers scheduler."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    common = {"num_train_timesteps": 1000, "prediction_type": prediction_type}

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


def trained_table(run, args, budgets) -> tuple[dict, dict]:
    """({label: {NFE: sliced W2 / floor}}, {label: {NFE: flow error}}) of physdiff's and
    diffusers' samplers on one trained run. The flow error is each solver's own: the mean squared
    distance (network units) of its output to the converged solve of the same flow from the same
    x_T (physdiff's unipc on 200 logSNR-uniform steps), free of the network's error."""
    from bench_samplers import reference_ratio

    from physdiff.samplers import IndexedNoise, randn_like

    _, n, ratio = reference_ratio(run, args.n, args.refs)
    x_T = randn_like(torch.empty(n, 2), IndexedNoise(1, 0, n))
    betas = run.schedule.betas.double().numpy()

    def score(z):
        return ratio(run.normalizer.decode(z.double()).numpy())

    def network(x, t):
        return run.model(x.float(), t, None)

    table, flow = {}, {}
    ref = run.sample_normalized(x_T, sampler="unipc", steps=200, spacing="logsnr").samples.double()

    def keep(label, k, z):
        table.setdefault(label, {})[k] = score(z)
        flow.setdefault(label, {})[k] = float(((z.double() - ref) ** 2).sum(1).mean())

    cells = PHYSDIFF | {"physdiff unipc fitted": ("unipc", {"spacing": "fitted"})}
    for label, (sampler, opts) in cells.items():
        # the spacing named, so that a cell without "fitted" does not take the run's fitted steps
        opts = {"spacing": "uniform" if sampler == "ddim" else "logsnr"} | opts
        for k in budgets:
            if opts.get("spacing") == "fitted" and run.fitted_timesteps(sampler, {"steps": k}) is None:
                continue
            keep(label, k, run.sample_normalized(x_T, sampler=sampler, steps=k, **opts).samples)
    for label, make in diffusers_cells("v_prediction").items():
        for k in budgets:
            keep(label, k, run_diffusers(make(betas), network, x_T, k))
    table["physdiff unipc 200 (converged)"] = {k: score(ref) for k in budgets}
    return table, flow


def trained(args, budgets):
    """The same comparison on the trained networks of the default runs in ``args.runs``."""
    import diffusers

    from physdiff.run import LoadedRun

    out = Path(args.out)
    only = args.only.split(",") if args.only else None
    # --only: these runs again (e.g. after a new fit), the others' cells kept from the JSON
    results = json.loads(out.read_text()) if only and out.exists() else {}
    results["diffusers_version"] = diffusers.__version__
    for path in sorted(p for p in Path(args.runs).iterdir() if (p / "ema.safetensors").exists()):
        if only and path.name not in only:
            continue
        run = LoadedRun(path, device="cpu")
        if run.cfg.diffusion.prediction != "v" or run.data_shape != (2,):
            continue
        table, flow = trained_table(run, args, budgets)
        if only:  # the NFE not run again keep their cells
            for label, row in table.items():
                results.setdefault(path.name, {}).setdefault(label, {}).update({str(k): v for k, v in row.items()})
            for label, row in flow.items():
                results.setdefault("flow_error", {}).setdefault(path.name, {}).setdefault(label, {}).update(
                    {str(k): v for k, v in row.items()})
        else:
            results[path.name] = table
            results.setdefault("flow_error", {})[path.name] = flow
        print(f"\n### {path.name} (trained default run, n = {args.n}, same x_T): sliced W2 / floor")
        print("| sampler | " + " | ".join(f"NFE {k}" for k in budgets) + " |")
        print("| --- |" + " --- |" * len(budgets))
        for label, row in table.items():
            err = flow.get(label, {})
            print(f"| {label} | " + " | ".join(f"{row[k]:.2f} ({err[k]:.1e})" if k in err else
                                              f"{row[k]:.2f}" if k in row else "–" for k in budgets) + " |",
                  flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nfe", default="10,15,20,30")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--refs", type=int, default=4)
    p.add_argument("--datasets", default="gaussian,two_gaussians,eight_gaussians,spiral")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", default=None, help="compare on the trained default runs in this folder instead")
    p.add_argument("--only", default=None, help="--runs: only these runs (comma-separated names), their cells "
                                                "merged into the JSON")
    p.add_argument("--out", default=None, help="default benchmarks/diffusers_compare.json (--runs: "
                                               "benchmarks/diffusers_trained.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    budgets = [int(k) for k in args.nfe.split(",")]
    if args.runs:
        args.out = args.out or "benchmarks/diffusers_trained.json"
        return trained(args, budgets)
    args.out = args.out or "benchmarks/diffusers_compare.json"
    import diffusers

    sched = make_schedule("linear", 1000)
    betas = sched.betas.double().numpy()
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

"""log Z of a lattice theory at one coupling, by Monte Carlo's own estimators and by the exact
sampler, each with its error and its cost: the job behind ``physdiff free-energy``.

Every Monte Carlo estimator starts where the theory is solvable (``Theory.solvable``: φ⁴ at
κ = 0, Ising at β = 0, where log Z is closed-form and exact draws exist) and moves the parameter
p from there to the target p₁, d log Z/dp = −⟨∂S/∂p⟩ (``Theory.action_derivative``):

- ``ti``, thermodynamic integration: log Z(p₁) = log Z(p₀) − ∫ ⟨∂S/∂p⟩ dp, the integrand from a
  reference Monte Carlo ensemble (``mc.run_mcmc``) at each point of a uniform grid, integrated by
  Simpson's rule. The statistical error is Σ wᵢ² σᵢ² with σᵢ the Γ-method error of point i
  (chains as replicas); the quadrature error, reported apart and added in quadrature to the
  total, is the difference |S_h − S_2h| between Simpson on the grid and on every other point: a
  bound on S_2h's error, conservative for S_h once the integrand is resolved (Richardson's
  |S_h − S_2h| / 15 assumes that, and undercovers a grid too coarse for the integrand's bend:
  the free field at κ = 0.24 on 5 points is 0.40 off with a Richardson error of 0.05).
- ``mbar``: the same ensembles through MBAR (Shirts & Chodera, J. Chem. Phys. 129, 124105
  (2008); ``pymbar``), which uses every configuration at every coupling: reduced potentials
  u_k(x) = S_k(x), each ensemble thinned to one configuration per 2τ_int of its ∂S/∂p (MBAR's
  errors assume independent draws), log Z(p₁) = log Z(p₀) − (f₁ − f₀).
- ``jarzynski``: independent non-equilibrium trajectories (Jarzynski, PRL 78, 2690 (1997); Neal's
  annealed importance sampling, Stat. Comput. 11, 125 (2001)) from exact draws at p₀ through K
  steps of the coupling, each followed by one Monte Carlo sweep at the new coupling (HMC at a fixed
  step, tuned beforehand, and the theory's cluster update: each sweep keeps its coupling's law);
  the work W = Σ_k [S_{p_k}(x) − S_{p_{k−1}}(x)] gives log Z(p₁) − log Z(p₀) = log ⟨e^{−W}⟩,
  its error by a bootstrap over trajectories, and the Kish ESS of the weights e^{−W} (a warning
  when it is small: the error is then not to be trusted).
- ``diffusion``: the exact sampler of a trained run (``exact_sampler.sample_exact``) at the
  run's theory, log Z from its importance weights with the solver check's finer solve.

Each returns one report: ``log_z`` (value and error), the free energy density f = −log Z / V,
the method's own diagnostics and the seconds spent.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch

from ..errors import PhysdiffError
from ..stats import gamma_method
from .theory import Theory, get_theory

METHODS = ("ti", "mbar", "jarzynski", "diffusion")
MIN_POINTS = 5  # Simpson on the grid and on every other point: 1 mod 4 points, at least 5
MAX_POINTS = 1001  # a reference ensemble each: beyond it a grid is days of Monte Carlo, not a refinement
MAX_STEPS = 10**6  # jarzynski: coupling steps per trajectory, and trajectories (one sweep of all per step)


def solvable_start(theory: Theory, parameter: str | None) -> tuple[str, float]:
    """(the parameter moved, its value at the theory's solvable point), or one line saying why
    the theory cannot be integrated from one."""
    own = type(theory).solvable
    if not own:
        raise PhysdiffError(f"theory {theory.name!r} declares no solvable point (Theory.solvable), so ti, mbar and "
                            "jarzynski have nowhere to start; the diffusion method needs none")
    if parameter is None:
        parameter = next(iter(own))
    if parameter not in own:
        raise PhysdiffError(f"theory {theory.name!r} is solvable along {', '.join(own)}, not along {parameter!r}")
    return parameter, float(own[parameter])


def ladder(theory: Theory, parameter: str, start: float, points: int) -> list[Theory]:
    """The theory at ``points`` evenly spaced values of ``parameter`` from ``start`` to its own."""
    from dataclasses import replace

    return [replace(theory, **{parameter: float(v)}) for v in np.linspace(start, getattr(theory, parameter), points)]


def _derivative(theory: Theory, x: np.ndarray, parameter: str) -> np.ndarray:
    """−∂S/∂p per configuration, float64."""
    with torch.no_grad():
        return -theory.action_derivative(torch.from_numpy(np.asarray(x, dtype=np.float64)), parameter).numpy()


def simpson_weights(points: int, h: float) -> np.ndarray:
    """Simpson's rule on ``points`` (odd) equally spaced nodes of spacing h."""
    w = np.ones(points)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return w * h / 3.0


def _grid(theory: Theory, L: int, parameter: str | None, points: int, n: int, *, seed: int, chains: int,
          cluster: bool, progress) -> tuple:
    """(the parameter, its solvable value, the theory at each grid point, their reference
    ensembles (n, L, L), the Γ-method estimate of −⟨∂S/∂p⟩ at each): what ti and mbar share."""
    from .mc import run_mcmc

    parameter, start = solvable_start(theory, parameter)
    if not isinstance(points, int) or not MIN_POINTS <= points <= MAX_POINTS or points % 4 != 1:
        raise PhysdiffError(f"points = {points!r}: the grid needs 1 mod 4 points, {MIN_POINTS} to {MAX_POINTS} "
                            "(5, 9, 13, ...), so that Simpson's rule runs on it and on every other point")
    rungs = ladder(theory, parameter, start, points)
    xs, estimates = [], []
    for i, rung in enumerate(rungs):
        x, _ = run_mcmc(rung, L, n, seed=seed + i, chains=chains, cluster=cluster, progress=progress)
        xs.append(x)
        estimates.append(gamma_method(_derivative(rung, x, parameter).reshape(chains, -1)))
    return parameter, start, rungs, xs, estimates


def _integrated(theory: Theory, L: int, parameter: str, start: float, rungs: list, estimates: list, n: int,
                t0: float) -> dict:
    """The ti report of a grid of :func:`_grid`: Simpson on it and on every other point."""
    points = len(rungs)
    values = np.array([e.value for e in estimates])
    errors = np.array([e.error for e in estimates])
    h = (getattr(theory, parameter) - start) / (points - 1)
    w = simpson_weights(points, h)
    integral = float(w @ values)
    coarse = float(simpson_weights((points + 1) // 2, 2 * h) @ values[::2])
    anchor = rungs[0].log_z_solvable(L)
    stat = float(np.sqrt((w**2 * errors**2).sum()))
    quad = abs(integral - coarse)
    report = _report(theory, L, "ti", anchor + integral, math.hypot(stat, quad), t0)
    report["log_z"] |= {"statistical_error": stat, "quadrature_error": quad}
    report["diagnostics"] = {"parameter": parameter, "start": start, "log_z_start": anchor, "points": points,
                             "n_per_point": n, "grid": [getattr(r, parameter) for r in rungs],
                             "d_log_z": [{"value": float(v), "error": float(e)} for v, e in zip(values, errors,
                                                                                               strict=True)],
                             "coarse_grid_log_z": anchor + coarse}
    return report


def thermodynamic_integration(theory: Theory, L: int, *, parameter: str | None = None, points: int = 9,
                              n: int = 1600, seed: int = 0, chains: int = 16, cluster: bool = True,
                              progress=None) -> dict:
    """log Z of ``theory`` on an L×L lattice by thermodynamic integration from its solvable point
    (module docstring) on ``points`` (1 mod 4, >= 5) grid points with n configurations each."""
    t0 = time.perf_counter()
    parameter, start, rungs, _, estimates = _grid(theory, L, parameter, points, n, seed=seed, chains=chains,
                                                  cluster=cluster, progress=progress)
    return _integrated(theory, L, parameter, start, rungs, estimates, n, t0)


def _import_pymbar():
    """pymbar, imported quietly (it prints a banner when JAX is missing)."""
    import contextlib
    import io
    import warnings

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pymbar
    except ImportError:
        raise PhysdiffError("the mbar method needs pymbar: pip install pymbar (the dev extra has it)") from None
    return pymbar


def mbar(theory: Theory, L: int, *, parameter: str | None = None, points: int = 9, n: int = 1600, seed: int = 0,
         chains: int = 16, cluster: bool = True, progress=None) -> dict:
    """log Z of ``theory`` by MBAR over the ensembles of :func:`thermodynamic_integration`'s grid
    (the same seeds: the same ensembles), each thinned to one configuration per 2τ_int."""
    pymbar = _import_pymbar()
    t0 = time.perf_counter()
    parameter, start, rungs, xs, estimates = _grid(theory, L, parameter, points, n, seed=seed, chains=chains,
                                                   cluster=cluster, progress=progress)
    ti = _integrated(theory, L, parameter, start, rungs, estimates, n, t0)
    kept = []
    for x, est in zip(xs, estimates, strict=True):  # one configuration per 2τ_int of −∂S/∂p
        per = x.reshape(chains, -1, *x.shape[1:])[:, ::max(1, math.ceil(2 * est.tau_int))]
        kept.append(per.reshape(-1, *x.shape[1:]))
    counts = np.array([len(k) for k in kept])
    every = torch.from_numpy(np.concatenate(kept))
    with torch.no_grad():
        u = np.stack([rung.action(every).numpy() for rung in rungs])  # (K, N) reduced potentials
    import warnings

    from scipy.optimize import OptimizeWarning

    with warnings.catch_warnings():  # pymbar passes options newer SciPy solvers no longer take
        warnings.simplefilter("ignore", OptimizeWarning)
        out = pymbar.MBAR(u, counts).compute_free_energy_differences()
    df, ddf = float(out["Delta_f"][0, -1]), float(out["dDelta_f"][0, -1])
    anchor = ti["diagnostics"]["log_z_start"]
    report = _report(theory, L, "mbar", anchor - df, ddf, t0)
    report["diagnostics"] = {"parameter": parameter, "start": start, "log_z_start": anchor,
                             "points": points, "n_per_point": n, "kept_per_point": counts.tolist(),
                             "ti_on_the_same_ensembles": ti["log_z"]}
    return report


def jarzynski(theory: Theory, L: int, *, parameter: str | None = None, trajectories: int = 256, steps: int = 200,
              seed: int = 0, cluster: bool = True, progress=None) -> dict:
    """log Z of ``theory`` from ``trajectories`` non-equilibrium trajectories of ``steps`` coupling
    steps each from the solvable point (module docstring)."""
    from ..progress import progress_bar
    from ..stats import kish_ess
    from .mc import Chains

    parameter, start = solvable_start(theory, parameter)
    if not (isinstance(trajectories, int) and 2 <= trajectories <= MAX_STEPS
            and isinstance(steps, int) and 1 <= steps <= MAX_STEPS):
        raise PhysdiffError(f"jarzynski needs 2 to {MAX_STEPS} trajectories and 1 to {MAX_STEPS} steps (got "
                            f"{trajectories} and {steps})")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    rungs = ladder(theory, parameter, start, steps + 1)
    x = rungs[0].sample_solvable(L, trajectories, rng)
    eps, n_leap = 0.1, 10
    if theory.discrete is None:  # HMC's step tuned at the target on chains of their own, then fixed
        tuner = Chains(theory, x.copy(), seed + 1, cluster=cluster)
        for _ in range(100):
            tuner.update(tune=True)
        eps, n_leap = tuner.eps, tuner.n_leap
    chains = Chains(rungs[0], x, seed + 2, eps=eps, n_leap=n_leap, cluster=cluster)
    work = np.zeros(trajectories)
    with progress_bar(progress, steps, "jarzynski", "step") as bar:
        for prev, rung in itertools.pairwise(rungs):
            with torch.no_grad():
                phi = torch.from_numpy(chains.x)
                work += (rung.action(phi) - prev.action(phi)).double().numpy()
            chains.theory = rung
            chains.update()
            bar.update(1)
    log_w = -work
    if not np.isfinite(log_w).all():
        raise PhysdiffError(f"jarzynski: {int((~np.isfinite(log_w)).sum())} trajectories have a non-finite work; "
                            "the action is not finite along the protocol")
    top = log_w.max()
    delta = float(top + math.log(np.exp(log_w - top).mean()))
    boot = np.random.default_rng(seed + 3).integers(trajectories, size=(500, trajectories))
    draws = top + np.log(np.exp(log_w[boot] - top).mean(axis=1))
    ess, ess_err = kish_ess(log_w, seed=seed)
    anchor = rungs[0].log_z_solvable(L)
    report = _report(theory, L, "jarzynski", anchor + delta, float(draws.std(ddof=1)), t0)
    report["diagnostics"] = {"parameter": parameter, "start": start, "log_z_start": anchor, "steps": steps,
                             "trajectories": trajectories, "mean_work": float(work.mean()),
                             "work_std": float(work.std(ddof=1)), "ess_per_trajectory": ess,
                             "ess_per_trajectory_error": ess_err,
                             "hmc_acceptance": float(np.mean(chains.accepted)) if chains.accepted else None}
    if ess * trajectories < 20:
        report["log_z"]["warning"] = (f"Kish ESS {ess * trajectories:.1f} of {trajectories} trajectories: a few "
                                      "dominate and the error is not to be trusted; take more steps")
    return report


def diffusion(run, n: int = 1000, seed: int = 0, *, progress=None, **options) -> dict:
    """log Z of a trained lattice run's theory from its exact sampler's importance weights, with
    the solver check's finer solve where it ran (``exact_sampler.sample_exact``)."""
    from .exact_sampler import check_metropolis, sample_exact

    check_metropolis(run, None)
    t0 = time.perf_counter()
    exact = sample_exact(run, n, seed, progress=progress, **options)
    rep = exact.report
    lz = rep["log_z"]  # the finer-solve value where the solver check ran (its error covers the solver)
    report = _report(run.theory, run.cfg.theory["L"], "diffusion", lz["value"], lz["error"], t0)
    report["diagnostics"] = {"run": str(run.path), "proposals": n, "acceptance": rep["acceptance"],
                             "ess_per_sample": rep["ess_per_sample"], "log_z_raw": rep.get("log_z_raw", rep["log_z"]),
                             "log_q_check": rep.get("log_q_check"),
                             "training_seconds": _training_seconds(run)}
    return report


def _training_seconds(run) -> float | None:
    """The seconds the run's training took, from its metrics.csv (its last ``elapsed_s``)."""
    from ..checkpoint import METRICS_FILE, read_metrics

    try:
        rows, _ = read_metrics(run.path / METRICS_FILE)
    except (OSError, ValueError):
        return None
    elapsed = rows.get("elapsed_s")
    return float(elapsed[-1]) if elapsed is not None and len(elapsed) else None


def _report(theory: Theory, L: int, method: str, log_z: float, error: float, t0: float) -> dict:
    if not (math.isfinite(log_z) and math.isfinite(error)):
        raise PhysdiffError(f"{method}: log Z came out {log_z} ± {error}, not a finite number")
    V = L * L
    return {"method": method, "theory": theory.params, "L": L, "log_z": {"value": log_z, "error": error},
            "free_energy_density": {"value": -log_z / V, "error": error / V},
            "seconds": time.perf_counter() - t0}


def free_energy(model: str, L: int, values: dict, method: str, *, run=None, parameter: str | None = None,
                n: int | None = None, points: int = 9, steps: int = 200, seed: int = 0, cluster: bool = True,
                progress=None) -> dict:
    """log Z of theory ``model`` with ``values`` on an L×L lattice by ``method`` (module
    docstring). ``n``: configurations per grid point (ti, mbar; default 1600), trajectories
    (jarzynski; default 256) or proposals (diffusion; default 1000); ``run``: the trained run of
    the diffusion method (its theory must be this one)."""
    from .ensemble import check_theory_params

    if method not in METHODS:
        raise PhysdiffError(f"unknown free-energy method {method!r}; allowed: {', '.join(METHODS)}")
    theory = check_theory_params(model, L, values, prefix="--")
    if method == "diffusion":
        if run is None:
            raise PhysdiffError("the diffusion method needs a trained run of this theory (run=..., --run RUN)")
        if run.theory != theory or run.cfg.theory["L"] != L:
            raise PhysdiffError(f"run {str(run.path)!r} samples {run.theory.label}, L = {run.cfg.theory['L']}, not "
                                f"{theory.label}, L = {L}")
        return diffusion(run, n or 1000, seed, progress=progress)
    if run is not None:
        raise PhysdiffError(f"a run applies to the diffusion method, not to {method}")
    if method == "jarzynski":
        return jarzynski(theory, L, parameter=parameter, trajectories=n or 256, steps=steps, seed=seed,
                         cluster=cluster, progress=progress)
    estimator = thermodynamic_integration if method == "ti" else mbar
    return estimator(theory, L, parameter=parameter, points=points, n=n or 1600, seed=seed, cluster=cluster,
                     progress=progress)


def format_free_energy(report: dict) -> str:
    """The report as lines: log Z, f, and the method's own numbers."""
    lz, f = report["log_z"], report["free_energy_density"]
    theory = get_theory(report["theory"]["model"])
    params = ", ".join(f"{theory.symbol(k)} = {v:g}" for k, v in report["theory"].items() if k != "model")
    lines = [f"{report['method']}: {theory.title or theory.name}, {params}, L = {report['L']}: "
             f"log Z = {lz['value']:.4f} ± {lz['error']:.4f}, f = −log Z/V = {f['value']:.6f} ± {f['error']:.6f} "
             f"({report['seconds']:.1f} s)"]
    if "quadrature_error" in lz:
        lines.append(f"  statistical error {lz['statistical_error']:.4f}, quadrature error {lz['quadrature_error']:.4f}"
                     " (Simpson against every other point)")
    d = report["diagnostics"]
    if report["method"] == "jarzynski":
        lines.append(f"  {d['trajectories']} trajectories of {d['steps']} steps: work {d['mean_work']:.3f} ± "
                     f"{d['work_std']:.3f} (spread), Kish ESS/N {d['ess_per_trajectory']:.3f}")
    if report["method"] == "mbar":
        lines.append(f"  configurations kept per point (one per 2τ_int): {d['kept_per_point']}")
    if report["method"] == "diffusion":
        lines.append(f"  {d['proposals']} proposals, acceptance {d['acceptance']:.3f}, ESS/N {d['ess_per_sample']:.3f};"
                     f" training {d['training_seconds'] or 0:.0f} s not counted above")
    if "warning" in lz:
        lines.append(f"  warning: {lz['warning']}")
    return "\n".join(lines)

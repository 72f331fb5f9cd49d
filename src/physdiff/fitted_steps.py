"""Visited timesteps fitted to a run: the K indices that bring a deterministic K-step sampler
closest to its own converged solution from the same x_T.

A deterministic sampler (DDIM with η = 0, DPM-Solver++, UniPC) integrates the probability-flow
ODE of the run's network; with K evaluations its output differs from the flow's by a
discretisation error that depends on where the K points lie, and no fixed spacing (uniform,
logSNR, Karras) is best for every network. This module chooses them for one run and one
sampler: it minimises the global error

    E(τ) = mean_i ‖x_K(x_T^i; τ) − x_ref(x_T^i)‖²      (network units)

over the visited indices τ_K = T−1 > ... > τ_1 ≥ 0, where x_K is the sampler on τ and x_ref
the same sampler on ``REFERENCE_STEPS`` logSNR-uniform steps, or every step when T is smaller
(converged, to the draw of x_T, on every density of benchmarks/README.md by 100 NFE), for a
fixed draw of n standard normal x_T.

The search is a pattern search on the positions u = log σ̄ of τ_1..τ_{K-1} (τ_K stays at T−1,
where x_T is drawn), started from logSNR-uniform steps: each point in turn is moved by ±δ
while that lowers E, and δ halves from 0.8 to 0.025. E has many local minima (measured on the
default spiral run: searches from five starts ended between 2.7e-4 and 1.9e-3), so the search
is restarted ``HOPS`` times from the best positions moved at random by 0.3 in u, keeping the
best (basin hopping; on that run, n = 2048: 1.1e-3 after one search, 3.0e-4 after the second
restart). A second, independent draw of x_T then checks the result: the fit is kept only if
its error there is below that of logSNR-uniform steps (else the logSNR steps are kept, and the
report says so).

The sampler and the flow it integrates are unchanged: only where the K evaluations fall. The
idea of choosing a solver's steps by its global error against converged trajectories is that of
Watson et al. 2021 ("Learning to efficiently sample from diffusion probabilistic models", by
dynamic programming on a different loss) and of the bespoke solvers of Shaul et al. 2023 (which
fit the step sizes and more, by gradient); this is the simplest derivative-free form of it, on
the integer indices the samplers visit. Measured on every 2D default run: benchmarks/README.md.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ck
from . import samplers as smp
from .errors import PhysdiffError
from .progress import progress_bar
from .samplers import IndexedNoise, randn_like
from .schedule import Schedule, log_sigma_bar, timestep_subsequence

FITTABLE = ("ddim", "dpm-solver", "unipc")  # the deterministic samplers with a spacing
REFERENCE_STEPS = 200
DELTAS = (0.8, 0.4, 0.2, 0.1, 0.05, 0.025)  # pattern-search moves in u = log σ̄
HOP_DELTAS = (0.2, 0.1, 0.05, 0.025)  # the same after a hop
HOPS, HOP_SCALE = 6, 0.3  # basin hopping: restarts, and the spread of each point's random move in u
MAX_HOPS = 100
MAX_SWEEPS = 20  # sweeps over the points per δ, at most
FILE = ck.TIMESTEPS_FILE
FORMAT = 1


@dataclass(frozen=True)
class Fit:
    """A fitted set of visited indices. timesteps: ascending, the largest T−1 (the logSNR ones
    when the fit was not kept); start: the logSNR-uniform indices it started from; error_start,
    error_fitted: E on the held-out draw of x_T (network units²) of the logSNR-uniform and of the
    fitted indices (the latter also when they were not kept); error_fit_draw: E of the
    fitted indices on the draw they were fitted to; kept: whether the fit beat the start on the
    held-out draw; evaluations: sampler runs of the search; reference_steps: the steps of the
    solve the error is measured against."""

    timesteps: list[int]
    start: list[int]
    error_start: float
    error_fitted: float
    error_fit_draw: float
    kept: bool
    evaluations: int
    seconds: float
    reference_steps: int

    @property
    def improvement(self) -> float:
        """error_start / error_fitted on the held-out draw."""
        return self.error_start / self.error_fitted if self.error_fitted > 0 else math.inf

    def summary(self, sampler: str, n: int, where) -> str:
        """One line: what the fit of ``sampler`` on ``n`` held-out x_T gave, and where it went."""
        if not self.kept:
            return (f"the fitted timesteps did not beat logSNR-uniform ones on the held-out x_T "
                    f"({self.error_fitted:.3g} against {self.error_start:.3g}); {where} records that, and sample keeps "
                    "logSNR-uniform steps")
        return (f"fitted {len(self.timesteps)} timesteps for {sampler}: error against {sampler} on "
                f"{self.reference_steps} steps {self.error_start:.3g} (logSNR-uniform) -> {self.error_fitted:.3g} "
                f"({self.improvement:.1f}x smaller, on {n} held-out x_T; {self.evaluations} runs, "
                f"{self.seconds:.0f} s); timesteps {','.join(map(str, self.timesteps))} written to {where}; sample "
                "uses them when no --spacing is given")


def resolved_options(sampler: str, options: dict) -> dict | None:
    """The options a fit of ``sampler``'s visited timesteps depends on, with the sampler's own
    defaults filled in ({"steps", "order", "variant"} as the sampler takes them), or None when
    ``sampler`` with ``options`` is not deterministic with a step count (ddpm, the SDE solver, the
    ODE, ddim with η > 0, or every step)."""
    if sampler not in FITTABLE or float(options.get("eta") or 0.0) != 0.0:
        return None
    steps = options.get("steps") or smp.get_sampler(sampler).default_steps
    if steps is None:
        return None
    if sampler == "unipc":
        return {"steps": steps, "order": options.get("order") or smp.unipc_default_order(steps),
                "variant": options.get("variant") or "bh2"}
    if sampler == "dpm-solver":
        order = options.get("order") or 2
        return {"steps": steps, "order": order} | ({"variant": options.get("variant") or "reference"}
                                                   if order == 3 else {})
    return {"steps": steps}


def _global_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """E: the mean over samples of the squared distance between two solves (network units)."""
    return float(((out - ref) ** 2).flatten(1).sum(1).mean())


def _to_indices(u: np.ndarray, pos: np.ndarray) -> list[int] | None:
    """Indices at log σ̄ positions ``pos`` (ascending, the last at the top), rounded to the
    nearest index; None when two collide."""
    T = len(u)
    taus = np.round(np.interp(pos, u, np.arange(T))).astype(int)
    taus[-1] = T - 1
    if np.any(np.diff(taus) <= 0):
        return None
    return [int(t) for t in taus]


def _pattern_search(error: Callable[[list[int]], float], u: np.ndarray, pos: np.ndarray,
                    deltas: tuple[float, ...]) -> tuple[np.ndarray, list[int], float]:
    """From the log σ̄ positions ``pos``, move each point but the top one by ±δ while that lowers
    ``error``, for each δ of ``deltas`` in turn. Returns (positions, indices, error)."""
    taus = _to_indices(u, pos)
    best = error(taus)
    for delta in deltas:
        for _ in range(MAX_SWEEPS):
            improved = False
            for j in range(len(pos) - 1):
                for sign in (1.0, -1.0):
                    trial = pos.copy()
                    trial[j] += sign * delta
                    lo = u[0] if j == 0 else trial[j - 1]
                    if not lo <= trial[j] < trial[j + 1]:
                        continue
                    cand = _to_indices(u, trial)
                    if cand is None or cand == taus:
                        continue
                    e = error(cand)
                    if e < best * (1 - 1e-6):
                        pos, taus, best, improved = trial, cand, e, True
            if not improved:
                break
    return pos, taus, best


def _perturbed(u: np.ndarray, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """``pos`` with every point but the top one moved by N(0, HOP_SCALE²) in log σ̄, kept in
    range and in order; None when no draw of 20 keeps the indices distinct."""
    for _ in range(20):
        trial = pos.copy()
        trial[:-1] = np.sort(np.clip(trial[:-1] + rng.normal(0.0, HOP_SCALE, len(pos) - 1), u[0], u[-1] - 1e-3))
        if _to_indices(u, trial) is not None:
            return trial
    return None


def fit_timesteps(solve: Callable[[torch.Tensor, list[int]], torch.Tensor], sched: Schedule, steps: int,
                  x_fit: torch.Tensor, x_check: torch.Tensor, *, reference_steps: int = REFERENCE_STEPS,
                  hops: int = HOPS, seed: int = 0, progress: Callable[[int, float], None] | None = None) -> Fit:
    """Fit the ``steps`` visited indices of a deterministic sampler (see the module docstring).

    ``solve(x_T, timesteps)`` runs the sampler from x_T on the ascending indices ``timesteps``
    and returns its output (network units); ``x_fit`` and ``x_check`` are independent draws of
    x_T ~ N(0, I). ``hops`` restarts of the pattern search from the best positions so far moved
    at random (``seed``), for an error surface with many local minima (basin hopping).
    ``progress(evaluations, error)`` is called after the first search and after each hop."""
    T = sched.T
    reference_steps = min(reference_steps, T)
    if not 3 <= steps < reference_steps:
        raise PhysdiffError(f"fitted timesteps need 3 <= steps < {reference_steps} (the reference's steps, at most "
                            f"the run's T = {T}), got {steps}")
    t0 = time.perf_counter()
    u = log_sigma_bar(sched)
    start = timestep_subsequence(T, steps, "logsnr", sched)
    ref_fit = solve(x_fit, timestep_subsequence(T, reference_steps, "logsnr", sched))
    seen: dict[tuple[int, ...], float] = {}

    def error(taus: list[int]) -> float:
        key = tuple(taus)
        if key not in seen:
            seen[key] = _global_error(solve(x_fit, taus), ref_fit)
        return seen[key]

    pos, taus, best = _pattern_search(error, u, u[start].astype(np.float64), DELTAS)
    if progress is not None:
        progress(len(seen), best)
    rng = np.random.default_rng(seed)
    for _ in range(hops):
        trial = _perturbed(u, pos, rng)
        if trial is not None:
            p2, t2, b2 = _pattern_search(error, u, trial, HOP_DELTAS)
            if b2 < best:
                pos, taus, best = p2, t2, b2
        if progress is not None:
            progress(len(seen), best)
    ref_check = solve(x_check, timestep_subsequence(T, reference_steps, "logsnr", sched))

    e_start, e_fit = (_global_error(solve(x_check, t), ref_check) for t in (start, taus))
    kept = e_fit < e_start
    return Fit(taus if kept else start, start, e_start, e_fit, best, kept, len(seen),
               time.perf_counter() - t0, reference_steps)


def fit_key(sampler: str, options: dict, context: dict) -> str:
    """The key of a fit in a run's timesteps.json: the sampler, its resolved options (steps,
    order, variant) and the run's context (weights, data shape, coupling, guidance; None left
    out), e.g. "unipc order=2 steps=10 variant=bh2 | data_shape=2 weights=ema"."""
    def words(d):
        return " ".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, list | tuple) else v}"
                        for k, v in sorted(d.items()) if v is not None)

    return f"{sampler} {words(options)} | {words(context)}"


def read_fits(run_dir: Path) -> dict:
    """{key: entry} of the run's timesteps.json ({} when there is none); a corrupt file is an error."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT or not isinstance(data.get("fits"), dict):
            raise ValueError
    except (ValueError, AttributeError, UnicodeDecodeError, OSError):
        raise PhysdiffError(f"{str(path)!r} is not a physdiff timesteps file (corrupt or edited); delete it and fit "
                            "again with physdiff fit-steps") from None
    for key, entry in data["fits"].items():
        check_entry(entry, f"{str(path)!r} (fit {key!r})")
    return data["fits"]


def check_entry(entry, where: str) -> None:
    """One fit of a timesteps.json as :func:`entry_of` writes it: a table whose ``kept`` is true or
    false and whose ``timesteps`` are a list of integer indices (their range is checked against
    the run's T where they are used, ``samplers.check_timesteps``); else one line naming ``where``."""
    if not isinstance(entry, dict):
        raise PhysdiffError(f"{where} is {entry!r}, not a fit (a table of timesteps); the file is corrupt or edited: "
                            "delete it and fit again with physdiff fit-steps")
    if not isinstance(entry.get("kept"), bool):
        raise PhysdiffError(f"{where}: kept = {entry.get('kept')!r} must be true or false; the file is corrupt or "
                            "edited: delete it and fit again with physdiff fit-steps")
    steps = entry.get("timesteps")
    if (not isinstance(steps, list) or not steps
            or not all(isinstance(t, int) and not isinstance(t, bool) for t in steps)):
        raise PhysdiffError(f"{where}: timesteps = {steps!r} is not a list of step indices; the file is corrupt or "
                            "edited: delete it and fit again with physdiff fit-steps")


def write_fit(run_dir: Path, key: str, entry: dict) -> Path:
    """Add or replace one fit in the run's timesteps.json, atomically (a temporary file renamed)."""
    path = Path(run_dir) / FILE
    fits = read_fits(run_dir) | {key: entry}
    with ck.atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, "fits": fits}, indent=2) + "\n")
    return path


def entry_of(fit: Fit, sampler: str, options: dict, *, n: int, seed: int, hops: int = HOPS) -> dict:
    """The JSON entry of a fit: what it is, how it was fitted, and its errors."""
    from .provenance import version

    return {"sampler": sampler, "options": options, **asdict(fit),
            "reference": {"sampler": sampler, "steps": fit.reference_steps, "spacing": "logsnr"},
            "n": n, "seed": seed, "hops": hops, "physdiff": version()}


# ---------------------------------------------------------------- the job behind ``physdiff fit-steps``


def fit_steps(run, sampler: str = "unipc", steps: int = 10, *, order: int | None = None,
              variant: str | None = None, n: int = 1024, seed: int = 0, guidance: float | None = None,
              hops: int | None = None, progress=None):
    """Fit the visited timesteps of a deterministic ``sampler`` on ``steps`` evaluations to the
    run ``run`` (a ``LoadedRun``), store them in the run's timesteps.json (replacing an earlier
    fit of the same sampler and options) and return the :class:`fitted_steps.Fit`. From then
    on ``sample`` uses them whenever no spacing is given (or with spacing "fitted"). ``n``
    draws of x_T to fit on, another ``n`` to check; ``seed`` draws both; ``hops``: restarts
    of the search (default ``fitted_steps.HOPS``; fewer for many steps, where each costs more)."""
    given = {"steps": steps, "order": order, "variant": variant}
    smp.check_options(sampler, {k: v for k, v in given.items() if v is not None}, run.schedule.T)
    resolved = resolved_options(sampler, {k: v for k, v in given.items() if v is not None})
    if resolved is None:
        raise PhysdiffError(f"fit-steps is for the deterministic samplers with steps: {', '.join(FITTABLE)}; "
                            f"not {sampler}")
    if not isinstance(n, int) or not 64 <= n <= 1_000_000:
        raise PhysdiffError(f"n = {n!r} draws cannot fit timesteps; allowed: an integer in 64..1000000")
    hops = HOPS if hops is None else hops
    if isinstance(hops, bool) or not isinstance(hops, int) or not 0 <= hops <= MAX_HOPS:
        raise PhysdiffError(f"hops = {hops!r} is not allowed; allowed: an integer in 0..{MAX_HOPS}")
    opts = {k: v for k, v in resolved.items() if k != "steps"}
    cond = run.cond_input(n, None if not run.num_classes else torch.from_numpy(
        run.labels(np.arange(n))).to(run.device))

    def solve(x_T, taus):
        return run.sample_normalized(x_T, sampler=sampler, timesteps=taus, cond=cond, guidance=guidance,
                                     **opts).samples

    draws = [randn_like(torch.empty((n, *run.data_shape), device=run.device), IndexedNoise(s, 0, n))
             for s in (seed, seed + 1)]

    def report(bar):
        def done(runs, error):
            bar.set_postfix(runs=runs, error=f"{error:.3g}")
            bar.update(1)
        return done

    # one fit-steps at a time per run (timesteps.json is read, added to and replaced)
    with ck.OutputLock(run.path / ck.TIMESTEPS_FILE):
        read_fits(run.path)  # a corrupt file is refused before the work
        with progress_bar(progress, 1 + hops, f"fit-steps ({sampler}, {steps} steps)", "round") as bar:
            fit = fit_timesteps(solve, run.schedule, steps, *draws, hops=hops, seed=seed,
                                   progress=report(bar))
        context = run.fit_context(guidance)
        entry = entry_of(fit, sampler, resolved, n=n, seed=seed, hops=hops)
        write_fit(run.path, fit_key(sampler, resolved, context), entry | {"context": context})
    return fit

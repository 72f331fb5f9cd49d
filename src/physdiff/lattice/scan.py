"""A lattice theory scanned over one coupling: the reference Monte Carlo at every point, every
observable with its Γ-method error, and the Binder-cumulant crossings of successive lattice sizes.

    physdiff scan phi4 --L 8,16 --kappa 0.26:0.28:9 --lam 0.022 --n 4000 --out scan/
    physdiff scan ising --L 8,16 --beta 0.40:0.48:9 --n 4000 --out ising-scan/

Each point's ensemble is an ordinary ``mcmc`` ensemble in ``OUT/ensembles/`` (its JSON, its chains'
state), named by the theory, L and the couplings. A scan reuses the ensembles it finds there: one
made with the same theory, L, seed, chains and cluster updates is read (and extended bit for bit
with ``mc.extend_mcmc`` when it holds fewer configurations than asked for); one made otherwise is an
error that names the difference, never replaced. ``scan.json``, ``scan.csv`` and the figures are
recomputed from the ensembles on every run.

The Binder cumulant U_L = 1 − ⟨M⁴⟩/(3⟨M²⟩²) of two sizes crosses near the critical coupling (its
value at criticality is universal; corrections to scaling move the crossing of small L). The
crossing of L_a < L_b is the root of d = U_{L_a} − U_{L_b}, linearly interpolated between the two
grid points where d changes sign; its error is propagated linearly from the Γ-method errors of the
four U values (independent ensembles), with a parametric bootstrap over the same errors as a check.
The root of the cubic through the four grid points around the crossing is reported beside it: their
difference is the size of the interpolation's systematic error (refine the grid where it is not
small against the statistical one).
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import numpy as np

from ..errors import PhysdiffError
from .scan_figures import _n_range, scan_figures, scan_rows  # noqa: F401  (re-exported)
from .theory import get_theory

MAX_POINTS = 1000
GRID_HELP = "one value, a list a,b,c, or a range start:stop:count (count points, both ends included)"


def _named(name: str) -> str:
    """A scan's parameter in messages: its name, and the option that gives it on the command line."""
    return f"{name} (--{name})"


def parse_values(text: str, name: str) -> list[float]:
    """The couplings of ``text`` (see :data:`GRID_HELP`); one line naming the problem otherwise:
    a start or stop that is not a finite number is named as such before the range is checked (and
    before numpy sees it)."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if not (math.isfinite(start) and math.isfinite(stop)):
                raise PhysdiffError(f"{_named(name)} {text!r} holds a value that is not a finite number")
            if not 2 <= count <= MAX_POINTS or not stop > start:
                raise PhysdiffError(f"{_named(name)} {text!r}: a range needs start < stop and a count from 2 to "
                                    f"{MAX_POINTS}")
            values = [round(v, 12) for v in np.linspace(start, stop, count)]
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        raise PhysdiffError(f"{_named(name)} {text!r} is not {GRID_HELP}") from None
    if not all(math.isfinite(v) for v in values):
        raise PhysdiffError(f"{_named(name)} {text!r} holds a value that is not a finite number")
    if len(set(values)) != len(values):
        raise PhysdiffError(f"{_named(name)} {text!r} repeats a value")
    if len(values) > MAX_POINTS:
        raise PhysdiffError(f"{_named(name)} {text!r} holds {len(values)} values; at most {MAX_POINTS}")
    return sorted(values)


def parse_sizes(text: str) -> list[int]:
    """The lattice sizes (--L): one size or a list, each an integer >= 2, in increasing order."""
    try:
        sizes = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise PhysdiffError(f"lattice sizes {_named('L')} {text!r} are not a size or a list of sizes (e.g. 8,16)") \
            from None
    if any(L < 2 for L in sizes) or len(set(sizes)) != len(sizes):
        raise PhysdiffError(f"lattice sizes {_named('L')} {text!r}: sizes must be distinct integers >= 2")
    return sorted(sizes)


def ensemble_path(folder: Path, theory, L: int) -> Path:
    """OUT/ensembles/NAME_L<L>_<param><value>....npy: one file per theory, size and couplings
    (each coupling as Python writes it: distinct values, distinct names)."""
    values = "_".join(f"{k}{v!r}" for k, v in theory.params.items() if k != "model")
    return Path(folder) / "ensembles" / f"{theory.name}_L{L}_{values}.npy"


def point_seed(seed: int, L: int, params: dict) -> int:
    """The Monte Carlo seed of one scan point, a function of (seed, L, couplings) alone: adding
    couplings to a scan leaves the other points' ensembles (and their reuse) unchanged, and no two
    points share a stream."""
    words = [int(seed), int(L)]
    for k, v in sorted((k, v) for k, v in params.items() if k != "model"):
        words += [int.from_bytes(k.encode()[:8], "little"), int(np.float64(v).view(np.uint64))]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def check_reusable(plan: list, *, seed: int, chains: int, cluster: bool) -> None:
    """Every ensemble already in the scan folder that a point of ``plan`` would reuse was made the
    way this scan makes it (theory, L, seed, chains, cluster updates), checked from its JSON before
    any Monte Carlo: one made otherwise is named at once, not after the points before it have run
    (:func:`point_ensemble` checks it again, under its lock, when it reads it)."""
    import json

    from .ensemble import sidecar
    from .report import made_otherwise

    for L, _, theory, path in plan:
        try:
            info = json.loads(sidecar(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, UnicodeDecodeError):
            continue  # unreadable: point_ensemble's load_ensemble names it
        if not isinstance(info, dict) or not isinstance(info.get("params"), dict):
            continue
        differs = made_otherwise(info, theory, L, seed=point_seed(seed, L, theory.params), chains=chains,
                                 cluster=cluster)
        if differs is not None:
            raise PhysdiffError(f"ensemble {str(path)!r} in the scan folder was made with {differs}; scan into "
                                "another folder (out, --out; the ensembles there are reused, never replaced)")


def point_ensemble(theory, L: int, n: int, path: Path, *, seed: int, chains: int, cluster: bool, log=None,
                   progress=None) -> tuple[np.ndarray, dict, str]:
    """The ensemble of one scan point: read from ``path`` when one made the same way is there
    (extended to ``n`` if shorter), else made. Returns (configurations, its JSON, what was done:
    "made", "reused" or "extended")."""
    from ..checkpoint import OutputLock
    from .ensemble import load_ensemble
    from .report import made_otherwise, make_ensemble, resume_ensemble

    path.parent.mkdir(parents=True, exist_ok=True)
    options = dict(seed=seed, chains=chains, cluster=cluster, log=log, progress=progress)
    with OutputLock(path):
        if not path.is_file():
            make_ensemble(theory, L, n, path, **options)
            return (*load_ensemble(path), "made")
        x, info = load_ensemble(path)
        differs = made_otherwise(info, theory, L, seed=seed, chains=chains, cluster=cluster)
        if differs is not None:
            raise PhysdiffError(f"ensemble {str(path)!r} in the scan folder was made with {differs}; scan into "
                                "another folder (out, --out; the ensembles there are reused, never replaced)")
        if len(x) >= n:
            return x, info, "reused"
        resume_ensemble(theory, L, n, path, **options)
        return (*load_ensemble(path), "extended")


def crossings(values: np.ndarray, d: np.ndarray) -> list[tuple[float, int]]:
    """Roots of d(values) by linear interpolation in each interval where d changes sign (a zero
    at a grid point counts once, and only between opposite signs: curves that touch or coincide
    do not cross): [(root, index i of the interval [v_i, v_{i+1}])]."""
    out = []
    for i in range(len(values) - 1):
        a, b = d[i], d[i + 1]
        if a == 0 and 0 < i and d[i - 1] * b < 0:  # a zero on the grid between opposite signs
            out.append((float(values[i]), i))
        elif a * b < 0:
            out.append((float(values[i] + (values[i + 1] - values[i]) * a / (a - b)), i))
    return out


def binder_crossing(values, u_a: list[dict], u_b: list[dict], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Where U_{L_a} and U_{L_b} cross (values ascending; u: [{value, error}] per value):
    {"value", "error" (linear propagation), "bootstrap_error", "bootstrap_failures" (share of
    resamples without a crossing), "binder" (U at the crossing), "interval", "roots", "cubic"
    (:func:`_cubic_root`)} or, with no
    sign change on the grid, {"value": None, "reason"}."""
    v = np.asarray(values, dtype=np.float64)
    ua, ea = np.array([u["value"] for u in u_a]), np.array([u["error"] for u in u_a])
    ub, eb = np.array([u["value"] for u in u_b]), np.array([u["error"] for u in u_b])
    d, ed = ua - ub, np.hypot(ea, eb)
    roots = crossings(v, d)
    if not roots:
        return {"value": None, "reason": "the two Binder cumulants do not cross on the grid; widen the range"}
    # several sign changes (noise where the curves run together): the one with the steepest d
    root, i = max(roots, key=lambda r: abs(d[r[1]] - d[r[1] + 1]) / (v[r[1] + 1] - v[r[1]]))
    width, den = v[i + 1] - v[i], d[i] - d[i + 1]  # den ≠ 0: d changes sign over the interval
    # κ* = v_i + Δ d_i/(d_i − d_{i+1}): ∂κ*/∂d_i = −Δ d_{i+1}/den², ∂κ*/∂d_{i+1} = Δ d_i/den²
    error = float(math.hypot(width * d[i + 1] / den**2 * ed[i], width * d[i] / den**2 * ed[i + 1]))
    rng = np.random.default_rng(seed)
    boot, fails = [], 0
    for _ in range(n_boot):
        db = rng.normal(ua, ea) - rng.normal(ub, eb)
        r = crossings(v, db)
        if r:
            boot.append(min((x for x, _ in r), key=lambda x: abs(x - root)))
        else:
            fails += 1
    t = (root - v[i]) / width
    u_star = (1 - t) * ua[i] + t * ua[i + 1]
    return {"value": root, "error": error, "bootstrap_error": float(np.std(boot)) if boot else None,
            "bootstrap_failures": fails / n_boot, "binder": float(u_star), "interval": [float(v[i]), float(v[i + 1])],
            "roots": [r for r, _ in roots], "cubic": _cubic_root(v, d, i, root)}


def _cubic_root(v: np.ndarray, d: np.ndarray, i: int, linear: float) -> float | None:
    """The crossing from the cubic through the (up to) four grid points around the interval
    [v_i, v_{i+1}] (a quadratic with three): the interpolation's own systematic error is of the
    order of its distance from the linear root. None where the polynomial has no root there."""
    lo, hi = max(0, i - 1), min(len(v), i + 3)
    if hi - lo < 3:
        return None
    coef = np.polyfit(v[lo:hi] - linear, d[lo:hi], hi - lo - 1)
    roots = [r.real + linear for r in np.roots(coef) if abs(r.imag) < 1e-12 and v[i] <= r.real + linear <= v[i + 1]]
    return float(min(roots, key=lambda r: abs(r - linear))) if roots else None


def scan_plan(model: str, sizes: list[int], parameter: str, values: list[float], fixed: dict, out: Path) -> list:
    """[(L, coupling, theory, ensemble path)] of every point, each theory checked before any
    Monte Carlo runs (a coupling the theory refuses is named at once, not hours into a scan)."""
    from .ensemble import check_theory_params

    plan = []
    for L in sizes:
        for value in values:
            theory = check_theory_params(model, L, {**fixed, parameter: value}, prefix="")
            plan.append((L, value, theory, ensemble_path(out, theory, L)))
    return plan


def model_point(run, theory, n: int, seed: int, reference: dict, progress=None, **ode_options) -> dict:
    """The exact sampler of a trained ``run`` aimed at one scan point's ``theory`` (any coupling,
    the one it was trained at or not: the action in the acceptance ratio is the point's): raw and
    corrected observables, their z against the point's Monte Carlo ``reference``, acceptance,
    ESS/N and log Z. A coupling-conditioned run proposes at the point's coupling when it lies in
    its trained range, else at the nearest end of the range (``conditioned_at``; still exact,
    the chain's target is the point's theory)."""
    from . import exact_sampler as es
    from .observables import SCALARS, as_table, compare, measure

    at = None
    cond = getattr(run, "conditioning", None)
    if cond is not None:
        at = cond.nearest(theory.params[cond.name])
        run = run.at(at)
    t0 = time.perf_counter()
    exact = es.sample_exact(run, n, seed, theory=theory, progress=progress, **ode_options)
    seconds = time.perf_counter() - t0
    info = exact.report
    raw = as_table(measure(np.asarray(exact.fields, dtype=np.float64), theory))
    mh = as_table(measure(exact.chain.astype(np.float64), theory))

    L = exact.chain.shape[-1]
    for table in (raw, mh):  # ξ₂/L, as the Monte Carlo points carry it
        table["xi2_over_L"] = {"value": table["xi2"]["value"] / L, "error": table["xi2"]["error"] / L}
    return {"n": n, "seconds": seconds, "tau_int_abs_m_chain": info["tau_int_abs_m_chain"],
            "acceptance": info["acceptance"], "ess_per_sample": info["ess_per_sample"],
            "ess_per_sample_error": info["ess_per_sample_error"], "log_z": info["log_z"],
            "raw": {k: raw[k] for k in (*SCALARS, "xi2_over_L")},
            "metropolis": {k: mh[k] for k in (*SCALARS, "xi2_over_L")},
            "raw_z": compare(raw, reference), "metropolis_z": compare(mh, reference),
            "log_q_check": info.get("log_q_check"), **({} if at is None else {"conditioned_at": at})}


def run_scan(model: str, sizes: list[int], parameter: str, values: list[float], fixed: dict, n: int, out: Path, *,
             seed: int = 0, chains: int = 16, cluster: bool = True, log=None, progress=None, run=None,
             model_n: int = 1000, **ode_options) -> dict:
    """Every (L, coupling) point: its ensemble (:func:`point_ensemble`, seeded by
    :func:`point_seed`), with ``run`` (a trained lattice run of this theory) at the points of its
    L also :func:`model_point` from ``model_n`` proposals; its observables with Γ-method errors,
    ξ₂/L; then the Binder crossing of each pair of successive sizes. Returns the scan's JSON:
    ``n_requested`` is ``n`` (ensembles are made with it rounded up to a multiple of ``chains``),
    each point's ``n`` the configurations its ensemble holds (a reused one may hold more),
    ``n_used`` their range and ``n`` the one number when every point used the same (else None).
    Every check (the grid, the counts, each theory, every option of the model part) is made
    before any Monte Carlo runs."""
    from ..provenance import current
    from .ensemble import ensemble_chains
    from .observables import SCALARS, as_table, measure

    requested, n = n, check_counts(n, chains)
    plan = scan_plan(model, sizes, parameter, values, fixed, out)
    if log is not None and n != requested:
        log(f"n = {requested} rounded up to {n} configurations per point, a multiple of the {chains} chains")
    if run is not None:  # every option of the model part, before any Monte Carlo
        check_model(run, model, sizes, plan=plan, model_n=model_n, ode_options=ode_options)
    check_reusable(plan, seed=seed, chains=chains, cluster=cluster)
    points = []
    for L, value, theory, path in plan:
        t0 = time.perf_counter()
        s = point_seed(seed, L, theory.params)
        x, info, status = point_ensemble(theory, L, n, path, seed=s, chains=chains, cluster=cluster,
                                         log=log, progress=progress)
        table = as_table(measure(x.astype(np.float64), theory, chains=ensemble_chains(info)))
        obs = {name: table[name] for name in SCALARS}
        xi = table["xi2"]
        obs["xi2_over_L"] = {"value": xi["value"] / L, "error": xi["error"] / L}
        points.append({"L": L, parameter: value, "params": theory.params, "ensemble": str(path.relative_to(out)),
                       "status": status, "n": len(x), "seed": s,
                       "seconds": time.perf_counter() - t0, "observables": obs})
        if log is not None:
            log(f"L = {L}, {parameter} = {value:g}: {status} {path.name}, U_L = {obs['binder']['value']:.4f} ± "
                f"{obs['binder']['error']:.4f}")
        if run is not None and L == run.cfg.theory["L"]:
            mp = model_point(run, theory, model_n, point_seed(seed + 1, L, theory.params), obs, progress=progress,
                             **ode_options)
            points[-1]["model"] = mp
            if log is not None:
                log(f"  model {run.path.name}: acceptance {mp['acceptance']:.3f}, ESS/N {mp['ess_per_sample']:.3f}, "
                    f"log Z {mp['log_z']['value']:.4f} ± {mp['log_z']['error']:.4f}")
    used = [p["n"] for p in points]  # a reused ensemble holds what it holds: more than asked, never less
    result = {"theory": model, "parameter": parameter, "values": values, "fixed": fixed, "L": sizes,
              "n": used[0] if min(used) == max(used) else None, "n_requested": requested,
              "n_used": {"min": min(used), "max": max(used)},
              "chains": chains, "cluster_updates": cluster, "points": points, "binder_crossings": []}
    if run is not None:
        result["model"] = {"run": str(run.path), "trained_at": run.theory.params, "L": run.cfg.theory["L"],
                           "proposals": model_n}
        if getattr(run, "conditioning", None) is not None:  # one model for a range: its range, not its centre
            result["model"]["trained_at"] = {**run.theory.params, run.conditioning.name: [run.conditioning.lo,
                                                                                          run.conditioning.hi]}
            result["model"]["conditioned"] = run.conditioning.as_dict()
    for la, lb in itertools.pairwise(sizes):
        u = {L: [p["observables"]["binder"] for p in points if p["L"] == L] for L in (la, lb)}
        result["binder_crossings"].append({"L": [la, lb], **binder_crossing(values, u[la], u[lb])})
    crit = get_theory(model).critical_point(parameter, fixed)
    result["critical"] = None if crit is None else {"value": crit[0], "label": crit[1]}
    result["provenance"] = current().record("cpu")
    return result


def format_scan(result: dict, symbol: str) -> str:
    """The scan as a table: U_L, ⟨|M|⟩, χ_c per point, then the crossings."""
    par = result["parameter"]
    lines = [f"| L | {symbol} | n | ⟨|M|⟩ | χ_c | U_L | ξ₂/L | ensemble |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in result["points"]:
        o = p["observables"]
        cells = [f"{o[k]['value']:.5g} ± {o[k]['error']:.2g}"
                 for k in ("abs_m", "chi_connected", "binder", "xi2_over_L")]
        lines.append(f"| {p['L']} | {p[par]:g} | {p['n']} | " + " | ".join(cells) + f" | {p['status']} |")
    for p in result["points"]:
        if "model" in p:
            mp = p["model"]
            worst = max((abs(v) for v in mp["metropolis_z"].values() if v is not None), default=float("nan"))
            lines.append(f"model at L = {p['L']}, {symbol} = {p[par]:g}: acceptance {mp['acceptance']:.3f}, ESS/N "
                         f"{mp['ess_per_sample']:.3f} ± {mp['ess_per_sample_error']:.3f}, log Z "
                         f"{mp['log_z']['value']:.4f} ± {mp['log_z']['error']:.4f}, corrected observables within "
                         f"{worst:.1f} errors of the Monte Carlo")
    for c in result["binder_crossings"]:
        la, lb = c["L"]
        if c["value"] is None:
            lines.append(f"Binder crossing L = {la}/{lb}: {c['reason']}")
        else:
            boot = f", bootstrap {c['bootstrap_error']:.2g}" if c["bootstrap_error"] is not None else ""
            cubic = f", cubic interpolation {c['cubic']:.5f}" if c.get("cubic") is not None else ""
            lines.append(f"Binder crossing L = {la}/{lb}: {symbol} = {c['value']:.5f} ± {c['error']:.5f}{boot} "
                         f"(U = {c['binder']:.4f}{cubic})")
    if result.get("critical"):
        lines.append(f"{result['critical']['label']}: {symbol} = {result['critical']['value']:.5f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the job behind ``physdiff scan``

SCAN_OUTPUTS = ("scan.json", "scan.csv", "scan_observables.{fmt}", "scan_observables.csv", "scan_binder.{fmt}",
                "scan_binder.csv", "scan_model.{fmt}", "scan_model.csv")
MODEL_OUTPUTS = ("scan_model.{fmt}", "scan_model.csv")  # written by a scan with a model only


def scan_outputs(fmt: str, with_model: bool) -> list[str]:
    """The names of the files a scan writes into its folder (figures in format ``fmt``)."""
    return [name.format(fmt=fmt) for name in SCAN_OUTPUTS if with_model or name not in MODEL_OUTPUTS]


def check_counts(n: int, chains: int) -> int:
    """The configurations each point's ensemble is made with: ``n`` rounded up to a multiple of
    ``chains`` (as ``mcmc`` does, ``mc.rounded_n``), at least 2 per chain; else one line."""
    from .mc import rounded_n

    for name, value in (("n", n), ("chains", chains)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise PhysdiffError(f"{_named(name)} = {value!r} is not allowed; allowed: a positive integer")
    rounded = rounded_n(n, chains)
    if rounded < 2 * chains:
        raise PhysdiffError(f"{_named('n')} = {n} configurations per point on {_named('chains')} = {chains} chains "
                            f"leave fewer than 2 per chain; errors and the thermalisation check need n >= {2 * chains}")
    return rounded


def plan_grid(model: str, sizes_text: str, given: dict, n: int, chains: int) -> tuple[list[int], str, list, dict]:
    """(sizes, the scanned parameter, its values, the fixed parameters) of a scan of theory
    ``model`` from the texts of its sizes (``parse_sizes``) and of the parameters ``given``
    ({name: text}, see :data:`GRID_HELP`): exactly one parameter takes several values."""
    own = get_theory(model).parameters()
    sizes = parse_sizes(sizes_text)
    other = sorted(set(given) - set(own))
    if other:
        raise PhysdiffError(f"{_named(other[0])} is not a parameter of {model}; its parameters: "
                            + ", ".join(_named(k) for k in own))
    grids = {k: parse_values(v, k) for k, v in given.items()}
    scanned = [k for k, v in grids.items() if len(v) > 1]
    if len(scanned) != 1:
        raise PhysdiffError(f"give exactly one parameter of {model} as a list or range to scan (got "
                            f"{len(scanned)}: {', '.join(_named(k) for k in scanned) or 'none'}), e.g. "
                            f"{_named(next(iter(own)))} 0.26:0.28:9")
    check_counts(n, chains)
    parameter = scanned[0]
    return sizes, parameter, grids[parameter], {k: v[0] for k, v in grids.items() if k != parameter}


# the options of the exact sampler itself (``exact_sampler.sample_exact``); the others are its sampler's
_EXACT_OPTIONS = ("batch_size", "chain_seed", "snapshot_steps", "sampler", "burn_in", "log_q_check")


def check_model(run, model: str, sizes: list[int], *, plan: list | None = None, model_n: int = 1000,
                ode_options: dict | None = None) -> None:
    """A trained ``run`` serves a scan of ``model`` at ``sizes``, checked whole before any Monte
    Carlo: a run of that theory, made exact by its density (``exact_sampler.check_metropolis``),
    trained at one of the sizes; ``model_n`` proposals per point (at least 2: a chain of one state
    has no acceptance); the options of the exact sampler and of its ODE (``ode_options``: steps,
    method, ..., burn_in, log_q_check); and, at every point of the ``plan`` (:func:`scan_plan`) at
    the run's size, the run aimed at that point: a conditioned run put at the point's coupling (or
    the nearest end of its range) and a run of an embedding (Ising) with that embedding at the
    point's couplings (a shift degenerate there is refused now, not after the Monte Carlo)."""
    from .. import samplers as smp
    from .exact_sampler import check_metropolis

    ode_options = dict(ode_options or {})
    if run.theory is None or run.theory.name != model:
        raise PhysdiffError(f"the model run {str(run.path)!r} (--model) is not a {model} run (its data: "
                            f"{run.theory.name if run.theory is not None else run.kind.name})")
    check_metropolis(run, ode_options.get("sampler"))
    if run.cfg.theory["L"] not in sizes:
        raise PhysdiffError(f"the model run {str(run.path)!r} (--model) was trained at L = {run.cfg.theory['L']}, "
                            f"which is not among the scan's sizes {', '.join(map(str, sizes))}")
    if isinstance(model_n, bool) or not isinstance(model_n, int | np.integer) or model_n < 2:
        raise PhysdiffError(f"model_n (--model-n) = {model_n!r} proposals per point: the exact sampler needs an "
                            "integer >= 2 (a chain of one state has no acceptance, τ_int or error)")
    for name in ("burn_in", "log_q_check", "batch_size"):
        value = ode_options.get(name)
        low = 1 if name == "batch_size" else 0
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low):
            raise PhysdiffError(f"{name} = {value!r} of the model part must be an integer >= {low}")
    spec = smp.density_sampler() if ode_options.get("sampler") is None else smp.get_sampler(ode_options["sampler"])
    options = {k: v for k, v in ode_options.items() if k not in _EXACT_OPTIONS and v is not None}
    smp.check_options(spec.name, options | {"log_prob": True}, run.schedule.T)
    L = run.cfg.theory["L"]
    cond = getattr(run, "conditioning", None)
    for size, _, theory, _ in plan or []:
        if size != L:
            continue
        aimed = run if cond is None else run.at(cond.nearest(theory.params[cond.name]))
        embedding = getattr(aimed, "embedding", None)
        if embedding is not None:  # the one exact_sampler.sample_exact builds for the point's theory
            theory.embedding(embedding.name, embedding.L, embedding.shift)


def is_scan_json(path: Path) -> dict | None:
    """The JSON of an earlier scan's scan.json at ``path`` (whose outputs a new scan recomputes), or
    None when ``path`` is not one."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and {"points", "binder_crossings", "parameter"} <= set(data):
        return data
    return None


def _sha256(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _written_by(earlier: dict, name: str, path: Path) -> bool:
    """Whether the file ``name`` at ``path`` is one the earlier scan of scan.json ``earlier`` wrote
    and that nobody changed since: scan.json lists each file it wrote with its SHA-256 (``files``).
    A scan.json of before that list vouches for the files such a scan always wrote (scan.csv, the
    observables and Binder figures and their tables) and for scan_model only if it had a model."""
    files = earlier.get("files")
    if isinstance(files, dict):
        return isinstance(files.get(name), str) and files[name] == _sha256(path)
    return not name.startswith("scan_model.") or isinstance(earlier.get("model"), dict)


def check_scan_folder(out: Path, fmt: str, overwrite: bool, with_model: bool = True) -> None:
    """The scan's folder: a folder (or a new one) in an existing folder in which every file the
    scan will write (:func:`scan_outputs`) is new, or was written by the earlier scan whose
    scan.json is there and is unchanged since (:func:`_written_by`); any other (a user's own
    scan_model.csv, a figure edited since) is replaced only with ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise PhysdiffError(f"the scan's folder {str(out)!r} (out, --out) exists and is not a folder")
    if not out.parent.is_dir():
        raise PhysdiffError(f"folder {str(out.parent)!r} for the scan's folder {str(out)!r} (out, --out) does not "
                            "exist")
    if overwrite:
        return
    earlier = is_scan_json(out / "scan.json")
    for name in scan_outputs(fmt, with_model):
        path = out / name
        if not (path.exists() or path.is_symlink()):
            continue
        ours = earlier is not None and not path.is_symlink() and path.is_file() and (
            name == "scan.json" or _written_by(earlier, name, path))
        if not ours:
            raise PhysdiffError(f"{str(path)!r} exists and was not written by physdiff scan (or was changed since); "
                                "pass overwrite=True (on the command line --overwrite) to replace it, or scan into "
                                "another folder")


def scan_to_folder(model: str, sizes: list[int], parameter: str, values: list, fixed: dict, n: int, out: Path, *,
                   fmt: str = "png", overwrite: bool = False, run=None, log=None, **options) -> tuple[dict, list[str]]:
    """:func:`run_scan` into the folder ``out``: its ensembles, then scan.csv, the figures with their
    CSVs (``scan_figures``) and, last, scan.json, which lists every file written with its SHA-256
    (``files``: a later scan replaces those, unchanged, and nothing else without ``overwrite``), all
    written together under the scan's lock. ``options``: those of :func:`run_scan`. Returns (the
    scan's JSON, a line per file written)."""
    import hashlib

    from ..checkpoint import FIGURE_FORMATS, OutputLock, bytes_writer, figure_bytes, json_text, write_together
    from ..plots import figure_table, table_csv

    if fmt not in FIGURE_FORMATS:
        raise PhysdiffError(f"figure format {fmt!r} (--format) is not one of {', '.join(FIGURE_FORMATS)}")
    out = Path(out)
    check_scan_folder(out, fmt, overwrite, with_model=run is not None)
    result = run_scan(model, sizes, parameter, values, fixed, n, out, run=run, log=log, **options)
    files = {"scan.csv": table_csv(scan_rows(result)).encode()}
    lines = []
    for fname, fig in scan_figures(result, get_theory(model)).items():
        stem = Path(fname).stem
        files[f"{stem}.{fmt}"] = figure_bytes(fig, fmt)
        table = figure_table(fig)
        if table:
            files[f"{stem}.csv"] = table_csv(table).encode()
        lines.append(f"wrote {out / f'{stem}.{fmt}'}" + (f" and {out / f'{stem}.csv'}" if table else ""))
    earlier = is_scan_json(out / "scan.json") or {}
    kept = {}  # files of earlier scans left as they were (another format's figures, a model's): still theirs
    for name in {n.format(fmt=f) for n in SCAN_OUTPUTS for f in FIGURE_FORMATS} - set(files) - {"scan.json"}:
        path = out / name
        if earlier and path.is_file() and not path.is_symlink() and _written_by(earlier, name, path):
            kept[name] = _sha256(path)
    result["files"] = kept | {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    files["scan.json"] = (json_text(result) + "\n").encode()
    with OutputLock(out / "scan.json"):
        check_scan_folder(out, fmt, overwrite, with_model=run is not None)  # nothing new of a user's since
        write_together([(out / name, bytes_writer(data)) for name, data in files.items()])
    return result, [*lines, f"wrote {out / 'scan.json'} and {out / 'scan.csv'}"]

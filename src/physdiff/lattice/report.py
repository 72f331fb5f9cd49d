"""The lattice commands' jobs, as library calls: a reference ensemble made and written
(``physdiff mcmc``), and an ensemble's observables measured, compared, tabulated and drawn
(``physdiff observables``)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from ..errors import PhysdiffError
from ..provenance import recorded


@recorded
def make_ensemble(theory, L: int, n: int, out: Path, *, seed: int = 0, chains: int = 16, cluster: bool = True,
                  log=None, progress=None) -> str:
    """Run the reference Monte Carlo of ``theory`` and write the ensemble, its parameters (with
    its ``"provenance"``, ``provenance.py``) and the chains' final state (for
    :func:`resume_ensemble`) to ``out`` (.npy + .json, or .h5: ``ensemble.py``); returns the
    summary line. ``progress``: of the thermalisation and the production sweeps (``progress.py``).
    n is rounded up to a multiple of the chains (``mc.rounded_n``), and the summary line says so."""
    from ..provenance import current
    from .ensemble import save_ensemble
    from .mc import mcmc_stream, rounded_n

    rounded_n(n, chains)  # a bad n before any work
    t0 = time.perf_counter()
    x, report, state = mcmc_stream(theory, L, n, seed=seed, chains=chains, cluster=cluster, log=log,
                                   progress=progress)
    report["seconds"] = time.perf_counter() - t0
    save_ensemble(out, x, {"params": theory.params, "generator": "physdiff mcmc", **report,
                           "provenance": current().record("cpu")}, state)
    return _summary(f"wrote {len(x)} configurations ({chains} chains{_rounded(n, len(x), chains)}) to {_files(out)}",
                    report)


def _rounded(requested: int, n: int, chains: int) -> str:
    """"; n = 3000 rounded up to 3008, a multiple of the 16 chains" when n was rounded, else ""."""
    return "" if requested == n else f"; n = {requested} rounded up to {n}, a multiple of the {chains} chains"


def made_otherwise(info: dict, theory, L: int, *, seed: int, chains: int, cluster: bool) -> str | None:
    """"KEY = SAVED, not WANTED" for the first of the theory's parameters, L, seed, chains and
    cluster updates in which an ensemble's JSON ``info`` differs from the stream asked for; None
    when it is that stream."""
    want = {**theory.params, "L": L, "seed": seed, "chains": chains, "cluster_updates": cluster}
    saved = {**info["params"], **{k: info.get(k) for k in ("L", "seed", "chains", "cluster_updates")}}
    for key, value in want.items():
        if saved.get(key) != value:
            return f"{key} = {saved.get(key)!r}, not {value!r}"
    return None


def resume_ensemble(theory, L: int, n: int, out: Path, *, seed: int = 0, chains: int = 16, cluster: bool = True,
                    log=None, progress=None) -> str:
    """Extend the ensemble ``out`` written by :func:`make_ensemble` to n configurations in all,
    continuing each chain from its saved state: the result is bit for bit the ensemble one run of
    n would have made (``mc.extend_mcmc``). The theory, L, seed, chains and cluster updates must be
    those it was made with; a difference is named. Returns the summary line."""
    from ..provenance import current
    from .ensemble import load_ensemble, load_state, save_ensemble
    from .mc import extend_mcmc

    x, info = load_ensemble(out)
    state = load_state(out)
    differs = made_otherwise(info, theory, L, seed=seed, chains=chains, cluster=cluster)
    if differs is not None:
        raise PhysdiffError(f"cannot resume {str(out)!r}: it was made with {differs}; a resume continues the same "
                            "stream (only the number of configurations may grow)")
    for key, kinds, ok in (("burn_in_sweeps", int, lambda v: v >= 0), ("spacing_sweeps", int, lambda v: v >= 1),
                           ("pilot_tau_int_abs_m_sweeps", (int, float),  # τ_int may be below one sweep
                            lambda v: math.isfinite(v) and v > 0)):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, kinds) or not ok(value):
            raise PhysdiffError(f"cannot resume {str(out)!r}: its parameters' {key} = {value!r} is not a count of "
                                "sweeps (the file was edited)")
    last = x.reshape(chains, -1, *x.shape[1:])[:, -1]
    if state["x"].shape != last.shape or not np.array_equal(last, state["x"].astype(np.float32)):
        raise PhysdiffError(f"cannot resume {str(out)!r}: its saved Monte Carlo state is not that of its last "
                            "configurations (the ensemble or its state was replaced since)")
    t0, n_old = time.perf_counter(), len(x)
    x, report, state = extend_mcmc(theory, x, info, state, n, log=log, progress=progress)
    before = info.get("seconds")
    report["seconds"] = (before if isinstance(before, (int, float)) else 0.0) + time.perf_counter() - t0
    report["provenance"] = current().record("cpu")
    save_ensemble(out, x, report, state)
    n_new = len(x)
    return _summary(f"extended {_files(out)} to {n_new} configurations ({chains} chains, {n_new - n_old} new"
                    f"{_rounded(n, n_new, chains)})", report)


def mcmc_to_file(theory, L: int, n: int, out: Path, *, resume: bool = False, overwrite: bool = False,
                 **options) -> str:
    """The job behind ``physdiff mcmc``: :func:`make_ensemble` into ``out`` (its files must be
    new unless ``overwrite``), or with ``resume`` :func:`resume_ensemble` of the ensemble there;
    one writer at a time (``checkpoint.OutputLock``). ``options``: seed, chains, cluster, log,
    progress. Returns the summary line."""
    from ..checkpoint import OutputLock, new_output
    from .ensemble import written_files

    if resume and overwrite:
        raise PhysdiffError(f"resume (--resume) extends {str(out)!r} and overwrite (--overwrite) would replace it; "
                            "give one of them")
    if resume and not out.is_file():
        raise PhysdiffError(f"resume (--resume): ensemble {str(out)!r} does not exist; make it first (the same command "
                            "without --resume)")
    for path in [] if resume else written_files(out):
        new_output(path, overwrite)
    with OutputLock(out):  # the ensemble, its JSON and its state: one writer at a time
        if resume:
            return resume_ensemble(theory, L, n, out, **options)
        for path in written_files(out):  # again, now that no other process can be writing them
            new_output(path, overwrite)
        return make_ensemble(theory, L, n, out, **options)


def _files(out: Path) -> str:
    from .ensemble import is_hdf5, sidecar

    return f"{out}" if is_hdf5(out) else f"{out} and {sidecar(out)}"


def _summary(head: str, report: dict) -> str:
    from .observables import format_z

    therm = report["thermalisation"]
    acc = f", HMC acceptance {report['hmc_acceptance']:.3f} (step {report['hmc_step']:.3f})" \
        if "hmc_acceptance" in report else ""
    verdict = "agree" if therm["agree"] else "DISAGREE" if therm.get("comparable", True) else \
        "cannot be compared (zero errors)"
    monitor = next(k for k in therm if isinstance(therm[k], dict) and k != "action_density")
    label = {"abs_m": "|M|", "abs_q": "|Q|"}.get(monitor, monitor)
    return (f"{head}{acc}; hot/cold starts "
            f"{verdict} (z = {format_z(therm[monitor]['z'], '+.2f')} for {label}, "
            f"{format_z(therm['action_density']['z'], '+.2f')} for the action density); {report['seconds']:.1f} s")


def observables_report(ensemble: str, compare: str | None = None) -> tuple[dict, dict]:
    """({"ensemble", "params", "n", "observables", and "compare": {...} with z per observable},
    {"theory", "x", "y", "chains"}) for the ensemble file and optionally a second one of the same theory."""
    from .ensemble import ensemble_chains, load_ensemble
    from .observables import as_table, measure
    from .observables import compare as z_scores
    from .theory import theory_from_params

    x, info = load_ensemble(ensemble)
    theory = theory_from_params(info["params"])

    def measured(x, chains, where):  # the theory's own table where the scalar field's does not apply
        own = theory.observables(x, chains, where)
        return own if own is not None else as_table(measure(x, theory, chains=chains, where=where))

    table = measured(x, ensemble_chains(info), f"ensemble {str(ensemble)!r}")
    result = {"ensemble": ensemble, "params": info["params"], "n": len(x), "observables": table}
    y, chains = None, (ensemble_chains(info), 1)
    if compare:
        y, info_b = load_ensemble(compare)
        if y.shape[1:] != x.shape[1:] or info_b["params"] != info["params"]:
            raise PhysdiffError(f"compare (--compare) {compare!r}: lattice {y.shape[1:]} {info_b['params']} differs "
                                f"from {x.shape[1:]} {info['params']}")
        chains = (chains[0], ensemble_chains(info_b))
        other = measured(y, chains[1], f"ensemble {str(compare)!r}")
        if is_own_table(table):  # a theory's own table: z for each of its rows
            a, b = own_rows(table), own_rows(other)
            z = {k: ((a[k]["value"] - b[k]["value"]) / e if (e := math.hypot(a[k]["error"], b[k]["error"])) > 0
                     else None) for k in a if k in b}
        else:
            z = z_scores(table, other)
        result["compare"] = {"ensemble": compare, "observables": other, "z": z}
    return result, {"theory": theory, "x": x, "y": y, "chains": chains}


def format_observables(result: dict) -> str:
    """The readable table of :func:`observables_report`'s result."""
    from .observables import SCALARS, format_z

    cmp = result.get("compare")
    head = f"{'observable':<16}{'value':>14}{'error':>11}{'τ_int':>8}"
    if cmp:
        head += f"{'other':>14}{'error':>11}{'z':>7}"
    lines = [f"{result['ensemble']}: {result['n']} configurations, {result['params']}", head]
    if is_own_table(result["observables"]):  # a theory's own table (U(1)): its rows, then its flags
        return _format_own(result, lines)
    for k in SCALARS:
        row = result["observables"][k]
        line = f"{k:<16}{row['value']:>14.6g}{row['error']:>11.3g}{row['tau_int']:>8.2f}"
        if cmp:
            o = cmp["observables"][k]
            line += f"{o['value']:>14.6g}{o['error']:>11.3g}{format_z(cmp['z'][k], '>+7.2f')}"
        lines.append(line)
    lines.append("chi2 = V<M^2>; chi_connected = V(<M^2> - <|M|>^2); errors: Γ-method (Wolff 2004), τ_int in "
                 "measurements, bias-corrected (Wolff's eq. 49, as pyerrors)"
                 + ("; z = difference / combined error (n/a: both errors 0, not comparable)" if cmp else ""))
    return "\n".join(lines)


def is_own_table(table: dict) -> bool:
    """Whether ``table`` is a theory's own (``Theory.observables``), not the scalar field's
    (``observables.as_table``, which holds every one of ``observables.SCALARS``)."""
    from .observables import SCALARS

    return not all(k in table for k in SCALARS)


def own_rows(table: dict) -> dict:
    """{name: row} of a theory's own table (``Theory.observables``): its scalar rows, nested ones
    (Wilson loops ``W``) as ``W(1x2)``."""
    rows = {}
    for k, v in table.items():
        if isinstance(v, dict) and "value" in v:
            rows[k] = v
        elif isinstance(v, dict) and all(isinstance(r, dict) and "value" in r for r in v.values()):
            rows |= {f"{k}({name})": r for name, r in v.items()}
    return rows


def _format_own(result: dict, lines: list[str]) -> str:
    from .observables import format_z

    cmp = result.get("compare")
    rows = own_rows(result["observables"])
    other = own_rows(cmp["observables"]) if cmp else {}
    for k, row in rows.items():
        line = f"{k:<16}{row['value']:>14.6g}{row['error']:>11.3g}{row['tau_int']:>8.2f}"
        if cmp and k in other:
            o = other[k]
            err = math.hypot(row["error"], o["error"])
            z = (row["value"] - o["value"]) / err if err > 0 else None
            line += f"{o['value']:>14.6g}{o['error']:>11.3g}{format_z(z, '>+7.2f')}"
        lines.append(line + ("  FROZEN" if row.get("frozen") else ""))
    t = result["observables"]
    if t.get("frozen"):
        lines.append(f"WARNING: the topological charge is frozen: {t['frozen_reason']}; Q, Q² and χ_Q are not "
                     "results (their errors assume a τ_int the chains did not resolve)")
    lines.append("errors: Γ-method (Wolff 2004), τ_int in measurements, bias-corrected (Wolff's eq. 49, as pyerrors)")
    return "\n".join(lines)


def ensemble_figures(ensembles: dict, theory, title: str, *, reference: str | None = None,
                     independent: tuple[str, ...] = ()) -> dict:
    """{file name: Figure} of ensembles of one theory side by side: histograms of M and of the
    density (Poisson bands, a ratio panel against ``reference``, default the first; n, ESS and z in
    the legends), the full G(r), the time-slice correlator C(t) and its effective mass (ξ₂ beside
    them), and configurations. ensembles: {label: (x (N, L, L), table of ``observables.as_table``,
    chains)}; ``independent``: labels of ensembles of independent draws (a sampler's output, ESS = n,
    not estimated). C(t) subtracts ⟨|M|⟩² or ⟨M⟩² as the reference's Binder cumulant says
    (``correlator.default_subtraction``), the same for every ensemble so that they compare."""
    from ..plots import plot_configurations, plot_correlator, plot_lattice_histograms
    from .correlator import default_subtraction, timeslice_correlator
    from .observables import compare, primaries

    ref = reference if reference is not None else next(iter(ensembles))
    tables = {k: t for k, (_, t, _) in ensembles.items()}
    z = None
    if len(ensembles) == 2:
        other = next(k for k in ensembles if k != ref)
        zs = compare(tables[other], tables[ref])
        z = {"m": zs["abs_m"], "s": zs["action_density"]}
    tau = {k: "independent" if k in independent else {"m": t["m"]["tau_int"], "s": t["action_density"]["tau_int"]}
           for k, t in tables.items()}
    hist = plot_lattice_histograms({k: primaries(x, theory) for k, (x, _, _) in ensembles.items()},
                                   theory.density_label, f"{title}: histograms", discrete=theory.discrete is not None,
                                   reference=ref, tau=tau, z=z)
    subtract = default_subtraction(tables[ref]["binder"]["value"])
    timeslice = {}
    for k, (x, _, chains) in ensembles.items():
        ts = timeslice_correlator(x, chains, subtract)
        timeslice[k] = {"C": [e.as_dict() for e in ts["C"]], "m_eff": [e.as_dict() for e in ts["m_eff"]],
                        "subtract": subtract}
    L = next(iter(ensembles.values()))[0].shape[-1]
    corr = plot_correlator({k: t["G"] for k, t in tables.items()}, f"{title}: two-point functions",
                           timeslice=timeslice, xi2={k: t["xi2"] for k, t in tables.items()},
                           n={k: len(x) for k, (x, _, _) in ensembles.items()}, L=L)
    return {"histograms.png": hist, "correlator.png": corr,
            "configurations.png": plot_configurations({k: x for k, (x, _, _) in ensembles.items()},
                                                      title=f"{title}: configurations")}


def observable_figures(result: dict, data: dict) -> dict:
    """{file name: Figure} of :func:`ensemble_figures` for the ensemble (and the compared one, the
    reference of the ratio panels: ``observables model.npy --compare mc.npy``)."""
    theory, x, y = data["theory"], data["x"], data["y"]
    if is_own_table(result["observables"]):
        raise PhysdiffError(f"the observables figures (plot, --plot) are of scalar fields (M, G(r), C(t)); "
                            f"{theory.title or theory.name} ensembles have none yet: drop --plot")
    a, b = Path(result["ensemble"]).stem, Path(result["compare"]["ensemble"]).stem if y is not None else None
    if b == a:  # two files of one stem in different folders: name them apart
        a, b = str(result["ensemble"]), str(result["compare"]["ensemble"])
    ensembles = {a: (x, result["observables"], data["chains"][0])}
    if y is not None:
        ensembles[b] = (y, result["compare"]["observables"], data["chains"][1])
    return ensemble_figures(ensembles, theory, f"{theory.label}, L = {x.shape[-1]}", reference=b)


__all__ = ["ensemble_figures", "format_observables", "make_ensemble", "observable_figures", "observables_report",
           "resume_ensemble"]

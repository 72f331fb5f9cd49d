"""The lattice commands' jobs, as library calls: a reference ensemble made and written
(``physdiff mcmc``), and an ensemble's observables measured, compared, tabulated and drawn
(``physdiff observables``)."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import PhysdiffError
from ..provenance import recorded


@recorded
def make_ensemble(theory, L: int, n: int, out: Path, *, seed: int = 0, chains: int = 16, cluster: bool = True,
                  log=None, progress=None) -> str:
    """Run the reference Monte Carlo of ``theory`` and write the ensemble and its JSON (with its
    ``"provenance"``, ``provenance.py``) to ``out``; returns the summary line. ``progress``: of
    the thermalisation and production sweeps (``progress.py``)."""
    from ..provenance import current
    from .ensemble import save_ensemble, sidecar
    from .mc import run_mcmc
    from .observables import format_z

    if n % chains:
        raise PhysdiffError(f"--n {n} must be a multiple of --chains {chains}")
    t0 = time.perf_counter()
    x, report = run_mcmc(theory, L, n, seed=seed, chains=chains, cluster=cluster, log=log, progress=progress)
    report["seconds"] = time.perf_counter() - t0
    save_ensemble(out, x, {"params": theory.params, "generator": "physdiff mcmc", **report,
                           "provenance": current().record("cpu")})
    therm = report["thermalisation"]
    acc = f", HMC acceptance {report['hmc_acceptance']:.3f} (step {report['hmc_step']:.3f})" \
        if "hmc_acceptance" in report else ""
    verdict = "agree" if therm["agree"] else "DISAGREE" if therm.get("comparable", True) else \
        "cannot be compared (zero errors)"
    return (f"wrote {n} configurations ({chains} chains) to {out} and {sidecar(out)}{acc}; hot/cold starts "
            f"{verdict} (z = {format_z(therm['abs_m']['z'], '+.2f')} for |M|, "
            f"{format_z(therm['action_density']['z'], '+.2f')} for the action density); {report['seconds']:.1f} s")


def observables_report(ensemble: str, compare: str | None = None) -> tuple[dict, dict]:
    """({"ensemble", "params", "n", "observables", and "compare": {...} with z per observable},
    {"theory", "x", "y"}) for the ensemble file and optionally a second one of the same theory."""
    from .ensemble import ensemble_chains, load_ensemble
    from .observables import as_table, measure
    from .observables import compare as z_scores
    from .theory import theory_from_params

    x, info = load_ensemble(ensemble)
    theory = theory_from_params(info["params"])
    table = as_table(measure(x, theory, chains=ensemble_chains(info)))
    result = {"ensemble": ensemble, "params": info["params"], "n": len(x), "observables": table}
    y = None
    if compare:
        y, info_b = load_ensemble(compare)
        if y.shape[1:] != x.shape[1:] or info_b["params"] != info["params"]:
            raise PhysdiffError(f"--compare {compare!r}: lattice {y.shape[1:]} {info_b['params']} differs "
                                f"from {x.shape[1:]} {info['params']}")
        other = as_table(measure(y, theory, chains=ensemble_chains(info_b)))
        result["compare"] = {"ensemble": compare, "observables": other, "z": z_scores(table, other)}
    return result, {"theory": theory, "x": x, "y": y}


def format_observables(result: dict) -> str:
    """The readable table of :func:`observables_report`'s result."""
    from .observables import SCALARS, format_z

    cmp = result.get("compare")
    head = f"{'observable':<16}{'value':>14}{'error':>11}{'τ_int':>8}"
    if cmp:
        head += f"{'other':>14}{'error':>11}{'z':>7}"
    lines = [f"{result['ensemble']}: {result['n']} configurations, {result['params']}", head]
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


def observable_figures(result: dict, data: dict) -> dict:
    """{file name: Figure}: histograms, G(r) and configurations of the ensemble (and the compared one)."""
    from ..plots import plot_configurations, plot_correlator, plot_lattice_histograms
    from .observables import primaries

    theory, x, y = data["theory"], data["x"], data["y"]
    a, b = Path(result["ensemble"]).stem, Path(result["compare"]["ensemble"]).stem if y is not None else None
    if b == a:  # two files of one stem in different folders: name them apart
        a, b = str(result["ensemble"]), str(result["compare"]["ensemble"])
    names = {a: x} | ({b: y} if y is not None else {})
    corr = {a: result["observables"]["G"]} | ({b: result["compare"]["observables"]["G"]} if y is not None else {})
    title = f"{theory.label}, L = {x.shape[-1]}"
    return {"histograms.png": plot_lattice_histograms({k: primaries(v, theory) for k, v in names.items()},
                                                      theory.density_label, title),
            "correlator.png": plot_correlator(corr, f"{title}: connected two-point function"),
            "configurations.png": plot_configurations(names, title=f"{title}: configurations")}


__all__ = ["format_observables", "make_ensemble", "observable_figures", "observables_report"]

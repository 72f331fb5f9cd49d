"""The figures of a scan (``scan.py``): the observables against the coupling per lattice size,
the Binder cumulants with their crossings, and one trained model's efficiency at every point,
each with the table of its numbers attached (``plots.attach_table``). The theory's class gives
the title, symbols, density label and known critical coupling."""

from __future__ import annotations

from .theory import Theory

FIGURE_OBSERVABLES = ("abs_m", "chi_connected", "binder", "action_density", "xi2_over_L", "chi2")
_LABELS = {"abs_m": r"$\langle|M|\rangle$", "chi_connected": r"$\chi_c = V(\langle M^2\rangle - \langle|M|\rangle^2)$",
           "binder": r"Binder $U_L$", "xi2_over_L": r"$\xi_2 / L$", "chi2": r"$\chi_2 = V\langle M^2\rangle$"}


def scan_rows(result: dict) -> list[dict]:
    """One CSV row per (L, coupling, observable), with the configurations n it was measured on."""
    par = result["parameter"]
    return [{"L": p["L"], par: p[par], "n": p["n"], "observable": name, "value": o["value"], "error": o["error"],
             "tau_int": o.get("tau_int", "")}
            for p in result["points"] for name, o in p["observables"].items()]


def scan_figures(result: dict, theory: type[Theory]) -> dict:
    """{"scan_observables.png", "scan_binder.png" and, for a scan with a model, "scan_model.png"}
    of a scan of ``theory`` (its class: the title, parameter symbols, density label and known
    critical coupling come from it)."""
    figs = {"scan_observables.png": observables_figure(result, theory),
            "scan_binder.png": binder_figure(result, theory)}
    if any("model" in p for p in result["points"]):
        figs["scan_model.png"] = model_figure(result, theory)
    return figs


def _labels(result: dict, theory: type[Theory]) -> tuple[str, str, str]:
    """(the theory's title, the scanned parameter's symbol, the fixed parameters as "λ = 0.022")."""
    fixed = ", ".join(f"{theory.symbol(k)} = {v:g}" for k, v in result["fixed"].items())
    return theory.title or theory.name, theory.symbol(result["parameter"]), fixed


def observables_figure(result: dict, theory: type[Theory]):
    """Every observable of ``FIGURE_OBSERVABLES`` against the coupling, one series per L (and the
    model's Metropolis chain where the scan has one), with the table of values attached."""
    from matplotlib.figure import Figure

    from ..plots import LATTICE_COLORS, attach_table

    par, sizes = result["parameter"], result["L"]
    title, symbol, fixed = _labels(result, theory)
    fig = Figure(figsize=(14, 7.6), layout="constrained")
    for ax, name in zip(fig.subplots(2, 3).ravel(), FIGURE_OBSERVABLES, strict=True):
        for L, color in zip(sizes, LATTICE_COLORS, strict=False):
            pts = [p for p in result["points"] if p["L"] == L]
            ax.errorbar([p[par] for p in pts], [p["observables"][name]["value"] for p in pts],
                        yerr=[p["observables"][name]["error"] for p in pts], fmt="o-", ms=3.5, capsize=2.5,
                        color=color, label=f"L = {L}")
        mpts = [p for p in result["points"] if "model" in p and name in p["model"]["metropolis"]]
        if mpts:
            ax.errorbar([p[par] for p in mpts], [p["model"]["metropolis"][name]["value"] for p in mpts],
                        yerr=[p["model"]["metropolis"][name]["error"] for p in mpts], fmt="s", mfc="none", ms=6,
                        capsize=2.5, color="k", label=f"L = {mpts[0]['L']}: diffusion + Metropolis")
        label = theory.density_label if name == "action_density" else _LABELS.get(name, name)
        ax.set(xlabel=symbol, ylabel=label, title=label)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title} scan over {symbol}" + (f" ({fixed})" if fixed else "")
                 + f": reference Monte Carlo, n = {_n_range(result)} per point, Γ-method errors")
    attach_table(fig, scan_rows(result))
    return fig


def binder_figure(result: dict, theory: type[Theory]):
    """U_L against the coupling per L, each crossing with its error band, and the theory's known
    infinite-volume critical coupling where it has one (``Theory.critical_point``)."""
    from matplotlib.figure import Figure

    from ..plots import LATTICE_COLORS, attach_table

    par, sizes = result["parameter"], result["L"]
    title, symbol, fixed = _labels(result, theory)
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    rows = []
    for L, color in zip(sizes, LATTICE_COLORS, strict=False):
        pts = [p for p in result["points"] if p["L"] == L]
        ax.errorbar([p[par] for p in pts], [p["observables"]["binder"]["value"] for p in pts],
                    yerr=[p["observables"]["binder"]["error"] for p in pts], fmt="o-", ms=3.5, capsize=2.5,
                    color=color, label=f"L = {L}")
    for c in result["binder_crossings"]:
        if c["value"] is None:
            continue
        err = c["error"] if c["error"] == c["error"] else 0.0
        ax.axvspan(c["value"] - err, c["value"] + err, color="0.5", alpha=0.25, lw=0)
        ax.axvline(c["value"], color="0.3", lw=0.8, ls="--",
                   label=f"crossing L = {c['L'][0]}/{c['L'][1]}: {symbol} = {c['value']:.5f} ± {err:.5f}")
        rows.append({"L_a": c["L"][0], "L_b": c["L"][1], "crossing": c["value"], "error": err,
                     "bootstrap_error": c["bootstrap_error"], "binder": c["binder"]})
    critical = result.get("critical")
    if critical is not None:
        ax.axvline(critical["value"], color="k", lw=1.0, ls=":",
                   label=f"{critical['label']}: {symbol} = {critical['value']:.5f}")
    ax.set(xlabel=symbol, ylabel=r"Binder cumulant $U_L = 1 - \langle M^4\rangle / 3\langle M^2\rangle^2$",
           title=f"{title}: Binder cumulants and their crossings" + (f" ({fixed})" if fixed else ""))
    ax.legend(fontsize=8)
    attach_table(fig, rows or [{"crossing": "one size: no crossing" if len(sizes) < 2 else "none on the grid"}])
    return fig


def model_figure(result: dict, theory: type[Theory]):
    """ESS/N and acceptance of one trained model as the exact sampler at every coupling of the
    scan, with the coupling (or range) it was trained at."""
    from matplotlib.figure import Figure

    from ..plots import attach_table

    par = result["parameter"]
    title, symbol, _ = _labels(result, theory)
    mpts = [p for p in result["points"] if "model" in p]
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    x = [p[par] for p in mpts]
    ax.errorbar(x, [p["model"]["ess_per_sample"] for p in mpts],
                yerr=[p["model"]["ess_per_sample_error"] for p in mpts], fmt="o-", capsize=2.5, label="ESS/N")
    ax.plot(x, [p["model"]["acceptance"] for p in mpts], "s--", label="Metropolis acceptance")
    trained = result["model"]["trained_at"].get(par)
    if isinstance(trained, list):  # one model trained over a range of the coupling
        ax.axvspan(*trained, color="0.85", zorder=0, label=f"trained over {symbol} ∈ [{trained[0]:g}, {trained[1]:g}]")
    elif trained is not None:
        ax.axvline(trained, color="k", ls=":", lw=1, label=f"trained at {symbol} = {trained:g}")
    ax.set(xlabel=symbol, ylabel="ESS/N, acceptance", ylim=(0, 1.05),
           title=f"{title}, L = {mpts[0]['L']}: one trained model as the exact sampler of every {symbol}")
    ax.legend(fontsize=8)
    attach_table(fig, [{par: p[par], "ess_per_sample": p["model"]["ess_per_sample"],
                        "ess_per_sample_error": p["model"]["ess_per_sample_error"],
                        "acceptance": p["model"]["acceptance"], "log_z": p["model"]["log_z"]["value"],
                        "log_z_error": p["model"]["log_z"]["error"]} for p in mpts])
    return fig


def _n_range(result: dict) -> str:
    """The configurations per point: one number, or the range when reused ensembles hold more."""
    ns = [p["n"] for p in result["points"]]
    return str(min(ns)) if min(ns) == max(ns) else f"{min(ns)}–{max(ns)}"

"""Every figure. Each function returns a matplotlib Figure; only the CLI writes files. A figure
keeps the numbers it draws (:func:`attach_table`), which the CLI writes as a CSV beside it.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot state), so they work
headless and in notebooks alike.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

SCATTER = {"s": 2, "alpha": 0.35, "linewidths": 0, "rasterized": True}


def tile_images(images: np.ndarray, nrow: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """(N, C, H, W) images in [0, 1] (channels averaged) tiled ``nrow`` per row into one 2D
    float32 array, ``pad`` pixels of value ``fill`` around and between them."""
    n, _, h, w = images.shape
    rows = int(np.ceil(n / nrow))
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad), fill, dtype=np.float32)
    for i, img in enumerate(np.clip(images.mean(axis=1), 0, 1)):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid


def attach_table(fig: Figure, rows: list[dict]) -> Figure:
    """Keep the numbers drawn in ``fig`` with it: rows of one set of keys (the CLI writes them as a
    CSV beside the figure, :func:`table_csv`)."""
    fig.physdiff_table = rows
    return fig


def figure_table(fig: Figure) -> list[dict] | None:
    """The rows :func:`attach_table` kept with ``fig``, or None."""
    return getattr(fig, "physdiff_table", None)


def table_csv(rows: list[dict]) -> str:
    """CSV text of rows of one set of keys: a header, then one line per row (floats to 10 digits)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(rows[0].keys())
    for row in rows:
        writer.writerow(f"{v:.10g}" if isinstance(v, float) else v for v in row.values())
    return buf.getvalue()


def _limits(*sets: np.ndarray, pad: float = 0.08):
    allpts = np.concatenate([s[:, :2] for s in sets])
    lo, hi = np.percentile(allpts, 0.2, axis=0), np.percentile(allpts, 99.8, axis=0)
    span = np.maximum(hi - lo, 1e-6)
    return (lo[0] - pad * span[0], hi[0] + pad * span[0]), (lo[1] - pad * span[1], hi[1] + pad * span[1])


def _dims_note(x: np.ndarray) -> str:
    return "" if x.shape[1] == 2 else f" (first 2 of {x.shape[1]} dims)"


def plot_samples(data: np.ndarray, samples: np.ndarray, title: str = "") -> Figure:
    """Training data beside model samples, on the same axes. data, samples: (N, D ≥ 2)."""
    fig = Figure(figsize=(9, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    xlim, ylim = _limits(data, samples)
    panels = ((axes[0], data, "data", "tab:blue"), (axes[1], samples, "model samples", "tab:orange"))
    for ax, pts, name, color in panels:
        ax.scatter(pts[:, 0], pts[:, 1], color=color, **SCATTER)
        ax.set(title=f"{name} (n = {len(pts)})", xlabel="$x_1$", ylabel="$x_2$", xlim=xlim, ylim=ylim)
        ax.set_aspect("equal", adjustable="box")
        ax.grid(alpha=0.3)
    fig.suptitle((title or "Data and generated samples") + _dims_note(data))
    return attach_table(fig, [{"series": name, "x1": float(p[0]), "x2": float(p[1])}
                              for _, pts, name, _ in panels for p in pts[:, :2]])


def snapshot_times(sched, levels=(0.0, 0.15, 0.3, 0.5, 0.7, 0.9)) -> list[int]:
    """Paper steps t ∈ [0, T] at which the noise fraction √(1-ᾱ_t) first reaches each level,
    plus T: snapshots spread over what changes to the eye, not uniformly in t (with a linear
    schedule the structure is gone well before t = T/5)."""
    noise = sched.sqrt_one_minus_alpha_bar.numpy()
    times = {0 if lv <= 0 else int(np.searchsorted(noise, lv)) + 1 for lv in levels}
    return sorted({min(t, sched.T) for t in times} | {sched.T})


def plot_process(snapshots: list[tuple[int, np.ndarray]], T: int, *, reverse: bool, title: str = "") -> Figure:
    """Snapshots of the forward (x_0 → x_T) or reverse (x_T → x_0) process, in standardised
    units. snapshots: [(paper step t ∈ 0..T, points (N, D))] in the order to show."""
    k = len(snapshots)
    fig = Figure(figsize=(2.3 * k, 3.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, k, sharex=True, sharey=True))
    lim = max(3.5, float(np.percentile(np.abs(np.concatenate([s for _, s in snapshots])[:, :2]), 99.5)) * 1.1)
    color = "tab:purple" if reverse else "tab:green"
    for ax, (step, pts) in zip(axes, snapshots, strict=True):
        ax.scatter(pts[:, 0], pts[:, 1], color=color, **SCATTER)
        ax.set(title=f"$t = {step}$", xlim=(-lim, lim), ylim=(-lim, lim), xlabel="$x_1$")
        ax.set_aspect("equal", adjustable="box")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("$x_2$")
    default = (f"Reverse process $x_T \\to x_0$ (T = {T}, standardised units)" if reverse
               else f"Forward process $x_0 \\to x_T$ (T = {T}, standardised units)")
    fig.suptitle((title or default) + _dims_note(snapshots[0][1]))
    return attach_table(fig, [{"t": int(step), "x1": float(p[0]), "x2": float(p[1])}
                              for step, pts in snapshots for p in pts[:, :2]])


def plot_loss(steps: np.ndarray, loss: np.ndarray, lr: np.ndarray | None = None, title: str = "",
              val_loss: np.ndarray | None = None) -> Figure:
    """Training loss (log scale) against step, with the learning rate on a second axis and, for
    a run with held-out rows, the validation loss (the objective on them at fixed draws)."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, loss, color="tab:blue", lw=1.5, label="loss (mean over log interval)")
    if val_loss is not None:
        ax.plot(steps, val_loss, color="tab:red", lw=1.5, label="validation loss (held-out rows)")
    ax.set(xlabel="training step", ylabel="loss", yscale="log", title=title or "Training loss")
    ax.grid(alpha=0.3, which="both")
    if lr is not None:
        ax2 = ax.twinx()
        ax2.plot(steps, lr, color="tab:gray", lw=1, ls="--", label="learning rate")
        ax2.set_ylabel("learning rate")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right")
    elif val_loss is not None:
        ax.legend(loc="upper right")
    lrs = lr if lr is not None else np.full(len(steps), np.nan)
    rows = [{"step": int(a), "loss": float(b), "lr": float(c)} for a, b, c in zip(steps, loss, lrs, strict=True)]
    if val_loss is not None:
        rows = [row | {"val_loss": float(v)} for row, v in zip(rows, val_loss, strict=True)]
    return attach_table(fig, rows)


# ---------------------------------------------------------------- images


def _image_panel(ax, images: np.ndarray, nrow: int, pad: int = 1):
    """Tile (N, C, H, W) images in [0, 1] on ``ax`` (ink dark on white); returns the cell size."""
    _, _, h, w = images.shape
    ax.imshow(1 - tile_images(images, nrow, pad, fill=0.0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return h + pad, w + pad


def plot_class_grid(images: np.ndarray, class_names, per_class: int, title: str = "") -> Figure:
    """Samples in rows, one row per class: images (K·per_class, C, H, W) ordered by class.
    ``class_names`` None: an unconditional run, rows of ``per_class`` samples without labels."""
    k = len(class_names) if class_names is not None else int(np.ceil(len(images) / per_class))
    fig = Figure(figsize=(0.55 * per_class + 1.2, 0.55 * k + 0.8), layout="constrained")
    ax = fig.subplots()
    cell_h, _ = _image_panel(ax, images, per_class)
    if class_names is not None:
        ax.set_yticks([1 + cell_h * (i + 0.5) for i in range(k)], [str(c) for c in class_names])
        ax.set_ylabel("requested class")
        ax.set_xlabel(f"{per_class} samples per class")
    else:
        ax.set_xlabel(f"{len(images)} samples")
    ax.set_title(title or "Class-conditional samples")
    return fig


def plot_image_process(snapshots: list[tuple[int, np.ndarray]], T: int, title: str = "",
                       row_labels=None) -> Figure:
    """Reverse process of a few images: rows are samples, columns paper steps t (from T to 0).
    snapshots: [(t, images (M, C, H, W) in [0, 1])]; ``row_labels``: e.g. the requested classes."""
    m, k = len(snapshots[0][1]), len(snapshots)
    strip = np.stack([imgs for _, imgs in snapshots], axis=1).reshape(m * k, *snapshots[0][1].shape[1:])
    fig = Figure(figsize=(0.8 * k + 1.0, 0.8 * m + 0.9), layout="constrained")
    ax = fig.subplots()
    cell_h, cell_w = _image_panel(ax, strip, k)
    ax.set_xticks([1 + cell_w * (j + 0.5) for j in range(k)], [str(t) for t, _ in snapshots])
    ax.set_xlabel("diffusion step t")
    if row_labels is not None:
        ax.set_yticks([1 + cell_h * (i + 0.5) for i in range(m)], [str(r) for r in row_labels])
        ax.set_ylabel("requested class")
    else:
        ax.set_ylabel("sample")
    ax.set_title(title or f"Reverse process $x_T \\to x_0$ (T = {T})")
    return fig


def plot_guidance_sweep(rows: list[tuple[float, np.ndarray]], class_names, title: str = "") -> Figure:
    """Rows: guidance scales w; columns: classes. rows: [(w, images (K, C, H, W))]."""
    k = len(class_names)
    fig = Figure(figsize=(0.6 * k + 1.4, 0.6 * len(rows) + 0.9), layout="constrained")
    ax = fig.subplots()
    cell_h, cell_w = _image_panel(ax, np.concatenate([imgs for _, imgs in rows]), k)
    ax.set_yticks([1 + cell_h * (i + 0.5) for i in range(len(rows))], [f"{w:g}" for w, _ in rows])
    ax.set_xticks([1 + cell_w * (j + 0.5) for j in range(k)], [str(c) for c in class_names])
    ax.set(ylabel="guidance scale w", xlabel="requested class",
           title=title or "Classifier-free guidance: same noise, growing w")
    return fig


def plot_nearest(samples: np.ndarray, neighbours: np.ndarray, distances: np.ndarray, threshold: float,
                 title: str = "") -> Figure:
    """Samples (top row) above their nearest training images (bottom row), with the pixel
    distance; red titles mark distances below the memorisation threshold."""
    m = len(samples)
    fig = Figure(figsize=(0.9 * m + 0.6, 2.6), layout="constrained")
    axes = fig.subplots(2, m, squeeze=False)
    for j in range(m):
        for row, img in ((0, samples[j]), (1, neighbours[j])):
            ax = axes[row, j]
            ax.imshow(1 - np.clip(img.mean(axis=0), 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[1, j].set_title(f"{distances[j]:.2f}", fontsize=8, color="red" if distances[j] < threshold else "black")
    axes[0, 0].set_ylabel("sample")
    axes[1, 0].set_ylabel("nearest\ntrain")
    fig.suptitle(title or f"Samples and their nearest training images (pixel distance; copy threshold {threshold:.2f})")
    return fig


# ---------------------------------------------------------------- lattice

LATTICE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def _level_spacing(levels: np.ndarray) -> float | None:
    """The spacing δ of a lattice of values that ``levels`` (sorted, distinct) sit on: the
    smallest gap divided by the smallest k ≤ 8 that puts every level on the lattice; None if none."""
    gaps = np.diff(levels)
    if not len(gaps):
        return None
    for k in range(1, 9):
        step = gaps.min() / k
        steps = (levels - levels[0]) / step
        if np.all(np.abs(steps - np.round(steps)) < 1e-6 * max(1.0, steps.max())):
            return float(step)
    return None


def histogram_edges(values: np.ndarray, discrete: bool, bins: int | None = None, max_bins: int = 120) -> np.ndarray:
    """Bin edges for a histogram of ``values``. A continuous observable: ``bins`` equal bins over
    its 0.1–99.9 percentiles (default: Rice's rule 2 n^{1/3}, between 15 and 60). An observable of
    a discrete theory (M of ±1 spins takes the values (V − 2k)/V; E/V a lattice of spacing 4/V):
    bins centred on its levels, found from the data
    (the lattice their gaps share), each holding the same number of levels — one each, or
    ⌈levels / max_bins⌉ when there are many — so no bin is empty for lack of a level (the picket
    fence of equal bins)."""
    values = np.asarray(values, dtype=np.float64)
    if discrete:
        levels = np.unique(np.round(values, 9))
        if len(levels) == 1:
            return np.array([levels[0] - 0.5, levels[0] + 0.5])
        step = _level_spacing(levels)
        if step is not None:  # else: no common lattice (not a theory's levels): equal bins below
            n_levels = round((levels[-1] - levels[0]) / step) + 1
            per_bin = -(-n_levels // max_bins)
            n_bins = -(-n_levels // per_bin)
            return levels[0] - step / 2 + step * per_bin * np.arange(n_bins + 1)
    lo, hi = np.percentile(values, [0.1, 99.9])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    if bins is None:
        bins = int(np.clip(2 * len(values) ** (1 / 3), 15, 60))
    return np.linspace(lo, hi, bins + 1)


def _poisson_density(values: np.ndarray, edges: np.ndarray):
    """(counts, density, error) of a histogram: density = count / (n Δ), error = √count / (n Δ)
    (Poisson errors, scaled like the histogram)."""
    counts = np.histogram(values, bins=edges)[0].astype(np.float64)
    scale = len(values) * np.diff(edges)
    return counts, counts / scale, np.sqrt(counts) / scale


Z_NAMES = {"m": "⟨|M|⟩", "s": "mean density"}  # what the z of each histogram panel compares


def _ess_note(n: int, tau) -> str:
    if tau == "independent":
        return f"n = {n}, independent"
    return f"n = {n}" if tau is None or not np.isfinite(tau) else f"n = {n}, ESS ≈ {n / (2 * tau):.0f}"


def plot_lattice_histograms(sets: dict[str, dict[str, np.ndarray]], action_label: str, title: str = "", *,
                            discrete: bool = False, reference: str | None = None, tau: dict | None = None,
                            z: dict | None = None) -> Figure:
    """Histograms of the magnetisation M (both peaks) and of the action (or energy) density, one
    step curve per ensemble with a band of Poisson errors (±√count per bin, scaled like the
    density), and below each a ratio panel: every other ensemble over ``reference`` (default: the
    first), with the propagated error √(δa² + r² δb²)/b and a line at 1.

    sets: {label: {"m": (N,), "s": (N,)}}. ``discrete``: the theory's field takes discrete values,
    so the bins sit on the observables' levels (:func:`histogram_edges`; a continuous field gets
    Rice's 2 n^{1/3} bins for the smallest ensemble's n). ``tau``: {label: {"m": τ_int, "s": τ_int}}
    puts the effective sample size n/(2τ_int) in the legend ({label: "independent"}: draws known
    to be independent, ESS = n): the Poisson band treats the n configurations as independent, so
    for a Markov chain it is too narrow by √(n/ESS).
    ``z``: {"m": z, "s": z} of the comparison, shown in the ratio panels. The numbers drawn are
    kept with the figure (:func:`figure_table`)."""
    ref = reference if reference is not None else next(iter(sets))
    ratio = len(sets) > 1
    fig = Figure(figsize=(9.5, 5.6 if ratio else 3.9), layout="constrained")
    axes = fig.subplots(2 if ratio else 1, 2, sharex="col", squeeze=False,
                        gridspec_kw={"height_ratios": [3, 1]} if ratio else None)
    rows = []
    panels = (("m", "magnetisation $M = V^{-1}\\sum_x \\phi_x$", "magnetisation M"),
              ("s", action_label, action_label))
    bins = int(np.clip(2 * min(len(v["m"]) for v in sets.values()) ** (1 / 3), 15, 60))
    for col, (key, xlabel, name) in enumerate(panels):
        ax, edges = axes[0, col], histogram_edges(np.concatenate([v[key] for v in sets.values()]), discrete, bins)
        centres = 0.5 * (edges[1:] + edges[:-1])
        hists = {}
        for (label, v), color in zip(sets.items(), LATTICE_COLORS, strict=False):
            counts, dens, err = hists[label] = _poisson_density(v[key], edges)
            t = (tau or {}).get(label)
            note = _ess_note(len(v[key]), t if t == "independent" else (t or {}).get(key))
            ax.stairs(dens, edges, color=color, lw=1.4, label=f"{label} ({note})")
            ax.fill_between(edges, np.r_[dens - err, dens[-1] - err[-1]], np.r_[dens + err, dens[-1] + err[-1]],
                            step="post", color=color, alpha=0.25, lw=0)
            rows += [{"panel": key, "series": label, "bin_lo": float(a), "bin_hi": float(b), "centre": float(c),
                      "count": int(k), "density": float(d), "error": float(e)}
                     for a, b, c, k, d, e in zip(edges[:-1], edges[1:], centres, counts, dens, err, strict=True)]
        ax.set(ylabel="density (±√count band)", title=name + (" (bins on the discrete levels)" if discrete else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        if not ratio:
            ax.set_xlabel(xlabel)
            continue
        rax = axes[1, col]
        _, d_ref, e_ref = hists[ref]
        spread = []
        for (label, (_, dens, err)), color in zip(hists.items(), LATTICE_COLORS, strict=False):
            if label == ref:
                continue
            ok = d_ref > 0
            r = dens[ok] / d_ref[ok]
            dr = np.sqrt(err[ok] ** 2 + r**2 * e_ref[ok] ** 2) / d_ref[ok]
            rax.errorbar(centres[ok], r, yerr=dr, fmt="o", ms=2.5, lw=1, color=color, label=label)
            spread.append(np.median(dr) if len(dr) else 0.0)
        rax.axhline(1.0, color="k", lw=1)
        half = float(np.clip(3 * max(spread, default=0.1), 0.25, 1.0))
        zk = (z or {}).get(key)
        rax.set(xlabel=xlabel, ylabel=f"ratio / {ref}" if len(ref) < 14 else "ratio", ylim=(1 - half, 1 + half),
                title=f"z({Z_NAMES[key]}) = {zk:+.1f}" if zk is not None else None)
        rax.title.set_fontsize(8)
        rax.grid(alpha=0.3)
    fig.suptitle(title or "Ensemble histograms")
    return attach_table(fig, rows)


def _errorbars(ax, x, rows, color, label, offset):
    ax.errorbar(np.asarray(x) + offset, [g["value"] for g in rows], yerr=[g["error"] for g in rows], fmt="o-",
                ms=4, capsize=3, color=color, label=label)


def plot_correlator(tables: dict[str, list[dict]], title: str = "", *, timeslice: dict | None = None,
                    xi2: dict | None = None, n: dict | None = None, L: int | None = None) -> Figure:
    """Two-point functions with Γ-method error bars, one series per ensemble.

    Left: G(r) = (1/V) Σ_x ⟨φ_x φ_{x+r}⟩ − ⟨M⟩², r along the axes (tables: {label: [{value,
    error}, r = 0..L/2]}). ⟨M⟩ = 0 by the φ → −φ symmetry in a finite volume, so this is the full
    correlator, not the connected one: in the broken phase it has a plateau at ≈ ⟨M²⟩.
    Middle and right (``timeslice``: {label: {"C": [...], "m_eff": [...], "subtract": "m" or
    "abs_m"}} of ``lattice.correlator``): the zero-momentum time-slice correlator C(t) and its
    periodic effective mass arccosh((C(t+1) + C(t−1)) / 2C(t)).

    ``xi2``: {label: {value, error}} of the second-moment correlation length ξ₂, in the legend and
    as a dotted line at 1/ξ₂ on the mass panel. ξ₂ comes from the ratio G̃(0)/G̃(2π/L) of the
    susceptibility to the lowest non-zero momentum; it equals the exponential correlation length
    only for ξ ≪ L. When ξ₂ is not small against L it is a finite-volume length (ξ₂/L is a
    universal function of L/ξ near a critical point), and 1/ξ₂ need not match the m_eff plateau.
    ``n``: {label: configurations} for the legend. The numbers drawn are kept with the figure."""
    k = 3 if timeslice else 1
    fig = Figure(figsize=(5.2 * k, 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, k))
    rows = []
    for i, ((label, g), color) in enumerate(zip(tables.items(), LATTICE_COLORS, strict=False)):
        notes = [f"n = {n[label]}"] if n and label in n else []
        if xi2 and label in xi2:
            notes.append(f"ξ₂ = {xi2[label]['value']:.3g} ± {xi2[label]['error']:.2g}")
        full = f"{label} ({', '.join(notes)})" if notes else label
        _errorbars(axes[0], np.arange(len(g)), g, color, full, 0.06 * i)  # offsets keep error bars apart
        rows += [{"series": label, "quantity": "G", "r": r, "value": e["value"], "error": e["error"]}
                 for r, e in enumerate(g)]
        if not timeslice or label not in timeslice:
            continue
        ts = timeslice[label]
        _errorbars(axes[1], np.arange(len(ts["C"])), ts["C"], color, full, 0.06 * i)
        _errorbars(axes[2], np.arange(1, len(ts["m_eff"]) + 1), ts["m_eff"], color, full, 0.06 * i)
        rows += [{"series": label, "quantity": "C", "r": t, "value": e["value"], "error": e["error"]}
                 for t, e in enumerate(ts["C"])]
        rows += [{"series": label, "quantity": "m_eff", "r": t, "value": e["value"], "error": e["error"]}
                 for t, e in enumerate(ts["m_eff"], start=1)]
        if xi2 and label in xi2 and xi2[label]["value"] > 0:
            axes[2].axhline(1 / xi2[label]["value"], color=color, ls=":", lw=1)
    # linear axes: the correlators can change sign at large r, and near κ_c span less than a decade
    axes[0].set(xlabel="distance $r$ (lattice units)",
                ylabel=r"$G(r) = \langle\phi_x\phi_{x+r}\rangle - \langle M\rangle^2$",
                title="full two-point function\n" r"($\langle M\rangle = 0$ by symmetry: not connected)")
    if timeslice:
        sub = {ts.get("subtract", "m") for ts in timeslice.values()}
        c2 = r"\langle |M|\rangle^2" if sub == {"abs_m"} else r"\langle M\rangle^2" if sub == {"m"} else "c^2"
        axes[1].set(xlabel="time separation $t$", ylabel=r"$C(t) = \langle\bar\phi(0)\bar\phi(t)\rangle - " + c2 + "$",
                    title="zero-momentum time-slice correlator")
        big = any(L and e["value"] > L / 4 for e in (xi2 or {}).values())
        axes[2].set(xlabel="time separation $t$", ylabel=r"$m_{\mathrm{eff}}(t)$ (lattice units)",
                    title="effective mass (cosh form)" + ("; dotted: $1/\\xi_2$" if xi2 else "")
                    + (f"\n($\\xi_2 > L/4 = {L / 4:g}$: a finite-volume length)" if big else ""))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return attach_table(fig, rows)


def plot_configurations(sets: dict[str, np.ndarray], per_row: int = 4, title: str = "") -> Figure:
    """A few configurations of each ensemble side by side, one row per ensemble, one colour scale
    (an ensemble with fewer than ``per_row`` configurations leaves its other panels blank)."""
    k = len(sets)
    fig = Figure(figsize=(2.0 * per_row + 0.8, 2.1 * k + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(k, per_row))
    lim = max(float(np.percentile(np.abs(np.concatenate([v[:per_row].ravel() for v in sets.values()])), 99)), 1e-6)
    image = None
    for row, (label, x) in zip(axes, sets.items(), strict=True):
        for j, ax in enumerate(row):
            ax.set(xticks=[], yticks=[])
            if j >= len(x):
                ax.set_axis_off()
                continue
            image = ax.imshow(x[j], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        row[0].set_ylabel(label)
    fig.colorbar(image, ax=axes, shrink=0.8, label="$\\phi_x$")
    fig.suptitle(title or "Configurations")
    return fig


def plot_log_weights(action: np.ndarray, log_q: np.ndarray, title: str = "") -> Figure:
    """−log q against S (slope 1, up to a constant, for a perfect model) and the histogram of
    the log importance weights log w = −S − log q (centred)."""
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax_a, ax_w = fig.subplots(1, 2)
    ax_a.scatter(action, -log_q, **SCATTER)
    shift = float(np.mean(-log_q - action))
    line = np.array([action.min(), action.max()])
    ax_a.plot(line, line + shift, color="k", lw=1, label="slope 1 (perfect model)")
    ax_a.set(xlabel="action $S(\\phi)$", ylabel="$-\\log q(\\phi)$ (nats)", title="model density against action")
    ax_a.legend(fontsize=8)
    lw = -action - log_q
    ax_w.hist(lw - lw.max(), bins=60, color="tab:gray")
    ax_w.set(xlabel="$\\log w - \\max \\log w$", ylabel="count", title="log importance weights")
    for ax in (ax_a, ax_w):
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Diffusion proposals")
    return fig

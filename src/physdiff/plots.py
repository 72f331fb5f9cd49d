"""Every figure. Each function returns a matplotlib Figure; only the CLI writes files.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot state), so they work
headless and in notebooks alike.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .data.images import tile_images

SCATTER = {"s": 2, "alpha": 0.35, "linewidths": 0, "rasterized": True}


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
    return fig


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
    return fig


def plot_loss(steps: np.ndarray, loss: np.ndarray, lr: np.ndarray | None = None, title: str = "") -> Figure:
    """Training loss (log scale) against step, with the learning rate on a second axis."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, loss, color="tab:blue", lw=1.5, label="loss (mean over log interval)")
    ax.set(xlabel="training step", ylabel="loss", yscale="log", title=title or "Training loss")
    ax.grid(alpha=0.3, which="both")
    if lr is not None:
        ax2 = ax.twinx()
        ax2.plot(steps, lr, color="tab:gray", lw=1, ls="--", label="learning rate")
        ax2.set_ylabel("learning rate")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right")
    return fig


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


def plot_lattice_histograms(sets: dict[str, dict[str, np.ndarray]], action_label: str, title: str = "") -> Figure:
    """Histograms of the magnetisation M (both peaks) and of the action (or energy) density,
    one step curve per ensemble. sets: {label: {"m": (N,), "s": (N,)}}."""
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax_m, ax_s = fig.subplots(1, 2)
    m_all = np.concatenate([v["m"] for v in sets.values()])
    s_all = np.concatenate([v["s"] for v in sets.values()])
    bins_m = np.linspace(m_all.min(), m_all.max(), 61)
    bins_s = np.linspace(*np.percentile(s_all, [0.1, 99.9]), 61)
    for (label, v), color in zip(sets.items(), LATTICE_COLORS, strict=False):
        ax_m.hist(v["m"], bins=bins_m, density=True, histtype="step", lw=1.5, color=color, label=label)
        ax_s.hist(v["s"], bins=bins_s, density=True, histtype="step", lw=1.5, color=color, label=label)
    ax_m.set(xlabel="magnetisation $M = V^{-1}\\sum_x \\phi_x$", ylabel="density", title="magnetisation")
    ax_s.set(xlabel=action_label, ylabel="density", title=action_label)
    for ax in (ax_m, ax_s):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Ensemble histograms")
    return fig


def plot_correlator(tables: dict[str, list[dict]], title: str = "") -> Figure:
    """Connected G(r) with Γ-method error bars, log scale, one series per ensemble."""
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    for i, ((label, rows), color) in enumerate(zip(tables.items(), LATTICE_COLORS, strict=False)):
        r = np.arange(len(rows)) + 0.06 * i  # small offsets keep error bars apart
        ax.errorbar(r, [g["value"] for g in rows], yerr=[g["error"] for g in rows], fmt="o-", ms=4, capsize=3,
                    color=color, label=label)
    # linear axis: G_c can change sign at large r, and near κ_c it spans less than a decade
    ax.set(xlabel="distance $r$ (lattice units)",
           ylabel=r"$G_c(r) = \langle\phi_x\phi_{x+r}\rangle - \langle M\rangle^2$",
           title=title or "connected two-point function")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


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

"""Declared kinds of data: the one place that decides, per kind, how data are normalised,
post-processed at sampling, which network and sampler they get by default.

A run records its kind in ``config.toml`` (``data.kind``); ``auto`` is resolved when the
config is read (image sets → image, a file → file, otherwise toy), so old run directories
that predate the key still load. Adding a kind (lattice fields) is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KIND_NAMES = ("toy", "file", "image", "lattice")
LATTICE_DATASETS = ("phi4", "ising")
NORMALIZATIONS = ("auto", "standard", "scalar", "pixel")


@dataclass(frozen=True)
class DataKind:
    """name; normalization used for ``data.normalization = auto``: standard (per-dimension mean
    and std), scalar (x / one RMS over every site and sample: no shift, so translations and
    φ → −φ commute with it) or pixel ([0, 1] → [−1, 1]); value_range: samples are clipped to it
    (None: never clipped); arch: network for ``model.arch = auto``; sampler: default sampler
    options; sample_batch: samples per network batch by default."""

    name: str
    normalization: str
    arch: str
    value_range: tuple[float, float] | None = None
    sampler: dict = field(default_factory=lambda: {"sampler": "ddpm"})
    sample_batch: int = 4096
    symmetry: str = "none"  # model.symmetry = auto: "odd" makes the network odd in x (nets/symmetry.py)
    gaussian: str = "none"  # model.gaussian = auto: "spectrum" adds the Gaussian field's denoiser (nets/gaussian.py)

    def postprocess(self, x: np.ndarray, data_cfg=None) -> np.ndarray:
        """Samples in data units as the kind allows them: images clipped to [0, 1]; Ising
        spins read through their sign (a continuous model of a discrete law has no density
        on ±1: its samples are mapped, not drawn exactly)."""
        if self.name == "lattice" and data_cfg is not None and data_cfg.dataset == "ising":
            return np.where(x >= 0, 1.0, -1.0).astype(x.dtype)
        return x if self.value_range is None else np.clip(x, *self.value_range)


# 1000 U-Net evaluations per image sample (twice with guidance) are minutes on a CPU; DDPM on 100
# respaced steps is within the noise of the 1000-step sampler (benchmarks/README.md).
KINDS = {
    "toy": DataKind("toy", "standard", "mlp"),
    "file": DataKind("file", "standard", "mlp"),
    "image": DataKind("image", "pixel", "unet", (0.0, 1.0), {"sampler": "ddpm", "steps": 100}, 512),
    # lattice: a residual MLP on the flattened field; its exact divergence (D = L² backward passes
    # per ODE evaluation) is ~10x cheaper on a CPU than the periodic U-Net's (model.arch = unet)
    # exact Gaussian part from the data's power spectrum (benchmarks/README.md: the raw action density)
    "lattice": DataKind("lattice", "scalar", "mlp", None, {"sampler": "ddpm", "steps": 100}, 1024, "odd", "spectrum"),
}


def resolve_kind(data_cfg) -> DataKind:
    """The DataKind of a [data] config (``kind = auto`` resolved from dataset and file)."""
    from .images import IMAGE_DATASETS

    name = data_cfg.kind
    if name == "auto":
        name = ("file" if data_cfg.file else "image" if data_cfg.dataset in IMAGE_DATASETS
                else "lattice" if data_cfg.dataset in LATTICE_DATASETS else "toy")
    return KINDS[name]


__all__ = ["KINDS", "KIND_NAMES", "LATTICE_DATASETS", "NORMALIZATIONS", "DataKind", "resolve_kind"]

"""Datasets: toy 2D distributions and users' own (N, D) files, with the normalisation
fitted on the training data and undone at sampling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import PhysdiffError
from .images import IMAGE_DATASETS, ImageData, load_image_dataset
from .toy import TOY_DATASETS, ToyDataset, get_toy

MIN_ROWS = 16

__all__ = ["IMAGE_DATASETS", "MIN_ROWS", "TOY_DATASETS", "ImageData", "Normalizer", "ToyDataset", "TrainingSet",
           "get_toy", "load_array", "load_image_dataset", "load_training", "resolve_toy", "toy_for",
           "training_array"]


def is_image_config(data_cfg) -> bool:
    return not data_cfg.file and data_cfg.dataset in IMAGE_DATASETS


def resolve_toy(name: str) -> ToyDataset:
    """The toy dataset ``name``, or a PhysdiffError listing the allowed names."""
    try:
        return get_toy(name)
    except KeyError:
        import difflib

        allowed = (*TOY_DATASETS, *IMAGE_DATASETS)
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PhysdiffError(f"unknown dataset {name!r}{hint}; allowed: {', '.join(allowed)}") from None


def load_array(path: str | Path, *, min_rows: int = MIN_ROWS) -> np.ndarray:
    """Read a (N, D) float array from ``.npy`` or ``.csv`` (comma-separated, optional header
    line). Raises PhysdiffError for a missing/unreadable file, wrong shape, NaN/inf, or
    fewer than ``min_rows`` rows."""
    path = Path(path)
    if not path.is_file():
        raise PhysdiffError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            arr = _read_csv(path)
        else:
            raise PhysdiffError(f"data file {str(path)!r}: unsupported extension {suffix!r}; allowed: .npy, .csv")
    except PhysdiffError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise PhysdiffError(f"data file {str(path)!r} could not be read: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise PhysdiffError(f"data file {str(path)!r} has dtype {arr.dtype}; expected a numeric array")
    if arr.ndim != 2:
        raise PhysdiffError(f"data file {str(path)!r} has shape {arr.shape}; expected (N, D) with N rows of D numbers")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise PhysdiffError(f"data file {str(path)!r} has {arr.shape[0]} rows of {arr.shape[1]} values; "
                            f"need at least {min_rows} rows and 1 column")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise PhysdiffError(f"data file {str(path)!r} contains {int(bad.sum())} NaN/inf values "
                            f"(first in row {row}); remove or fix those rows")
    return arr


def _read_csv(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
    try:
        [float(v) for v in first.strip().split(",")]
        skip = 0
    except ValueError:
        skip = 1  # a header line
    arr = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
    return arr


@dataclass(frozen=True)
class Normalizer:
    """Affine map to network units, x_net = (x - shift) / scale, fitted on training data.
    ``shift`` and ``scale``: float64 tensors broadcastable to one sample's shape."""

    shift: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def standardize(cls, x: np.ndarray | torch.Tensor) -> Normalizer:
        """Per-dimension mean and standard deviation of x: (N, D)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        std = x.std(dim=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return cls(x.mean(dim=0), std)

    @classmethod
    def identity(cls, shape) -> Normalizer:
        return cls(torch.zeros(shape, dtype=torch.float64), torch.ones(shape, dtype=torch.float64))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.shift.to(x)) / self.scale.to(x))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x) + self.shift.to(x)

    def log_abs_det_jacobian(self) -> float:
        """log |det ∂x_net/∂x| per sample = -Σ log scale (to turn densities into data units)."""
        full = torch.broadcast_to(self.scale, torch.broadcast_shapes(self.scale.shape, self.shift.shape))
        return float(-full.log().sum())

    def state(self) -> dict[str, torch.Tensor]:
        return {"normalizer.shift": self.shift.contiguous(), "normalizer.scale": self.scale.contiguous()}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor]) -> Normalizer:
        return cls(tensors["normalizer.shift"].to(torch.float64), tensors["normalizer.scale"].to(torch.float64))


def toy_for(data_cfg) -> ToyDataset | None:
    """The toy dataset a [data] config names (None when it names a file or an image set)."""
    if data_cfg.file or is_image_config(data_cfg):
        return None
    if data_cfg.dataset == "gaussian":
        from .toy import gaussian

        return gaussian(data_cfg.mean, data_cfg.cov)
    return resolve_toy(data_cfg.dataset)


def training_array(data_cfg) -> np.ndarray:
    """The training set a [data] config describes, (N, D) float64."""
    toy = toy_for(data_cfg)
    if toy is None:
        return load_array(data_cfg.file)
    return toy.sample(data_cfg.n_train, data_cfg.seed)


@dataclass(frozen=True)
class TrainingSet:
    """What training needs: data in data units, labels (or None), class names, normaliser."""

    x: np.ndarray  # (N, *data_shape)
    labels: np.ndarray | None  # (N,) int64 in [0, num_classes)
    class_names: tuple[str, ...]
    normalizer: Normalizer

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.labels is not None else 0


def image_normalizer(shape) -> Normalizer:
    """Pixels in [0, 1] → network units 2·pixel − 1 ∈ [−1, 1]."""
    return Normalizer(torch.full(tuple(shape), 0.5, dtype=torch.float64),
                      torch.full(tuple(shape), 0.5, dtype=torch.float64))


def load_training(data_cfg) -> TrainingSet:
    """The training split a [data] config describes, with its normaliser (standardisation for
    vectors, fixed [0, 1] → [−1, 1] for images) and labels if ``data.conditional``."""
    if is_image_config(data_cfg):
        images = load_image_dataset(data_cfg)
        labels = images.train_y if data_cfg.conditional and images.num_classes > 1 else None
        return TrainingSet(images.train_x, labels, images.class_names if labels is not None else (),
                           image_normalizer(images.shape))
    x = training_array(data_cfg)
    return TrainingSet(x, None, (), Normalizer.standardize(x))

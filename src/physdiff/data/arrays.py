"""Arrays of data in memory and on disk: users' (N, D) .npy and .csv files read and checked, the
held-out split of a data file's rows, the normaliser fitted on the training rows, and the
training set a data kind hands to training (``kinds.py``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import MAX_ABS_VALUE, read_npy
from ..errors import PhysdiffError

MIN_ROWS = 16


def load_array(path: str | Path, *, min_rows: int = MIN_ROWS) -> np.ndarray:
    """Read a (N, D) float array from ``.npy`` or ``.csv`` (comma-separated, optional header
    line). Raises PhysdiffError for a missing/unreadable file, wrong shape, NaN/inf, or
    fewer than ``min_rows`` rows."""
    path = Path(path)
    if path.is_dir():
        raise PhysdiffError(f"data file {str(path)!r} is a folder; give a .npy or .csv file")
    if not path.is_file():
        raise PhysdiffError(f"data file {str(path)!r} does not exist")
    if not os.access(path, os.R_OK):
        raise PhysdiffError(f"data file {str(path)!r} is not readable (permission denied)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = read_npy(path, "data file", "save it with numpy.save, or give a .csv")
        elif suffix == ".csv":
            arr = _read_csv(path)
        else:
            raise PhysdiffError(f"data file {str(path)!r}: unsupported extension {suffix!r}; allowed: .npy, .csv")
    except PhysdiffError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise PhysdiffError(f"data file {str(path)!r} could not be read: {exc}") from None
    return check_array(arr, f"data file {str(path)!r}", min_rows=min_rows)


def check_array(arr, what: str = "the data array", *, min_rows: int = MIN_ROWS) -> np.ndarray:
    """``arr`` as a (N, D) float64 array, or a PhysdiffError naming ``what`` for a non-numeric
    array, a shape other than (N, D), fewer than ``min_rows`` rows, NaN/inf or values beyond
    ±MAX_ABS_VALUE (the checks of a data file, for an array given in memory)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise PhysdiffError(f"{what} has dtype {arr.dtype}; expected a numeric array")
    if arr.ndim != 2:
        raise PhysdiffError(f"{what} has shape {arr.shape}; expected (N, D) with N rows of D numbers")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise PhysdiffError(f"{what} has {arr.shape[0]} rows of {arr.shape[1]} values; "
                            f"need at least {min_rows} rows and 1 column")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr) | (np.abs(arr) > MAX_ABS_VALUE)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        kind = "NaN/inf values" if not np.isfinite(arr).all() else f"values beyond ±{MAX_ABS_VALUE:g}"
        raise PhysdiffError(f"{what} contains {int(bad.sum())} {kind} "
                            f"(first in row {row}); remove or rescale those rows (float32 arithmetic overflows)")
    return arr


MIN_VALIDATION_ROWS = 2  # a distance between sets, and a spread of a loss, need two points
VALIDATION_TAG = 0x7A11D  # the split's stream: (data.seed, tag), apart from every other draw made from data.seed


def validation_indices(n_rows: int, fraction: float, seed: int, what: str = "the data") -> np.ndarray | None:
    """Rows of a user's data held out of training: k = round(fraction · N) distinct rows drawn
    uniformly by a generator seeded with (seed, VALIDATION_TAG), (k,) int64 in the order drawn
    (so the first j of them are a uniform subset too); None for fraction 0. Refuses a split that
    leaves fewer than MIN_VALIDATION_ROWS held-out or MIN_ROWS training rows."""
    if fraction <= 0:
        return None
    k = round(fraction * n_rows)
    if k < MIN_VALIDATION_ROWS or n_rows - k < MIN_ROWS:
        raise PhysdiffError(f"{what} has {n_rows} rows: holding out data.validation_fraction = {fraction:g} of them "
                            f"({k}) leaves {n_rows - k} to train on; a validation split needs at least "
                            f"{MIN_VALIDATION_ROWS} held-out and {MIN_ROWS} training rows. Give more rows, or set "
                            "data.validation_fraction = 0 to train on every row (evaluate then compares the model "
                            "with halves of the data and cannot see memorisation)")
    return np.random.default_rng([seed, VALIDATION_TAG]).permutation(n_rows)[:k].astype(np.int64)


def check_held_out(indices, n_rows: int, where: str, fraction: float | None = None) -> np.ndarray:
    """Recorded held-out row indices (a run's validation.npy) checked against data of ``n_rows``
    rows: a 1-D integer array of distinct rows in range that leaves MIN_ROWS to train on and, given
    the run's data.validation_fraction ``fraction``, exactly as many rows as training held out,
    round(fraction · N) (:func:`validation_indices`): a record cut short or padded would give a
    noise floor and memorisation thresholds from other rows than the split the model was kept from."""
    idx = np.asarray(indices)
    if (idx.ndim != 1 or idx.dtype.kind not in "iu" or len(idx) < MIN_VALIDATION_ROWS
            or n_rows - len(idx) < MIN_ROWS or idx.min() < 0 or idx.max() >= n_rows
            or len(np.unique(idx)) != len(idx)):
        raise PhysdiffError(f"{where} is not a list of held-out rows of the run's data ({n_rows} rows); restore it "
                            "from a good copy of the run (the split cannot be redrawn once a model has seen it)")
    if fraction is not None and len(idx) != round(fraction * n_rows):
        raise PhysdiffError(f"{where} names {len(idx)} held-out rows, but holding out data.validation_fraction = "
                            f"{fraction:g} of the data's {n_rows} rows held out {round(fraction * n_rows)}; the "
                            "record (or the data file) was changed since training: restore the run's validation.npy "
                            "from a good copy of the run and the data file it was trained on")
    return idx.astype(np.int64)


def data_fingerprint(x: np.ndarray, labels: np.ndarray | None = None) -> str:
    """sha256 of the training array (and labels): what a run records of the rows it learnt,
    checked on resume, by evaluate and by distill (:func:`check_fingerprint`)."""
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    if labels is not None:  # class labels as int64; a coupling-conditioned run's couplings as float64
        h.update(np.ascontiguousarray(labels, dtype=np.float64 if np.asarray(labels).dtype.kind == "f"
                                      else np.int64).tobytes())
    return h.hexdigest()


def check_fingerprint(x: np.ndarray, recorded: str | None, file: str, run: str) -> None:
    """The training rows ``x`` read again from data file ``file`` are those run ``run`` learnt (their
    :func:`data_fingerprint` is the ``recorded`` one; None: a run that recorded none, not checked),
    else one line: a file changed since training (rows shifted, rescaled, reordered) would
    otherwise give answers about other data without a word."""
    if recorded is not None and data_fingerprint(x) != recorded:
        raise PhysdiffError(f"data file {file!r} is not the data run {run!r} was trained on: its training rows' "
                            "SHA-256 fingerprint differs from the one the run recorded (the file was changed or "
                            "replaced since training); put back the file the run learnt, or train a new run on this "
                            "one")


def split_rows(x: np.ndarray, held_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training rows in file order, held-out rows in the order of ``held_out``) of x: (N, ...)."""
    keep = np.ones(len(x), dtype=bool)
    keep[held_out] = False
    return x[keep], x[held_out]



def _is_number(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


def _read_csv(path: Path) -> np.ndarray:
    """Comma-separated numbers. The first line is a header (column names, skipped) only when
    none of its fields is a number; a first line of numbers is data; a first line that mixes
    numbers and words is refused (it is neither, and guessing would drop or corrupt a row)."""
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
    fields = [f.strip() for f in first.strip().split(",")]
    numeric = [_is_number(f) for f in fields]
    if all(numeric):
        skip = 0
    elif not any(numeric):
        skip = 1  # a header line of column names
    else:
        raise PhysdiffError(f"data file {str(path)!r}: line 1 mixes numbers and text ({first.strip()[:60]!r}); "
                            "a header must be column names only, a data row numbers only")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's "empty input" warning: the row check below says it in one line
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
    def scalar(cls, x: np.ndarray | torch.Tensor) -> Normalizer:
        """x_net = x / s with one s = √⟨x²⟩ over every sample and site: no shift and one scale,
        so the map commutes with translations, rotations and x → −x of the data."""
        x = torch.as_tensor(x, dtype=torch.float64)
        rms = x.square().mean().sqrt()
        rms = torch.where(rms > 0, rms, torch.ones_like(rms))
        return cls(torch.zeros(()), rms.reshape(()))

    @classmethod
    def pixel(cls, shape) -> Normalizer:
        """Pixels in [0, 1] → network units 2·pixel − 1 ∈ [−1, 1]."""
        half = torch.full(tuple(shape), 0.5, dtype=torch.float64)
        return cls(half, half.clone())

    @classmethod
    def fit(cls, name: str, x: np.ndarray) -> Normalizer:
        """The normaliser ``name`` (standard, scalar or pixel) for training data x: (N, ...)."""
        if name == "standard":
            return cls.standardize(x)
        if name == "scalar":
            return cls.scalar(x)
        if name == "pixel":
            return cls.pixel(x.shape[1:])
        raise PhysdiffError(f"unknown normalization {name!r}; allowed: standard, scalar, pixel")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.shift.to(x)) / self.scale.to(x))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x) + self.shift.to(x)


    def state(self) -> dict[str, torch.Tensor]:
        return {"normalizer.shift": self.shift.contiguous(), "normalizer.scale": self.scale.contiguous()}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor]) -> Normalizer:
        return cls(tensors["normalizer.shift"].to(torch.float64), tensors["normalizer.scale"].to(torch.float64))

    def log_abs_det_jacobian(self, shape) -> float:
        """log |det ∂x_net/∂x| for one sample of ``shape`` (a scalar scale counts once per site)."""
        full = torch.broadcast_to(self.scale, tuple(shape))
        return float(-full.log().sum())



@dataclass(frozen=True)
class TrainingSet:
    """What training needs: data in data units, labels (or None), class names, normaliser."""

    x: np.ndarray  # (N, *data_shape)
    labels: np.ndarray | None  # (N,) int64 in [0, num_classes); float64 couplings of a coupling-conditioned run
    class_names: tuple[str, ...]
    normalizer: Normalizer
    validation: np.ndarray | None = None  # (K, *data_shape) held-out rows, data units (a data file's split)
    held_out: np.ndarray | None = None  # (K,) int64: their rows in the data file, as validation.npy records them

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.labels is not None else 0


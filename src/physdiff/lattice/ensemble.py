"""Ensembles on disk: ``NAME.npy`` (N, L, L) float32 ((N, C, L, L) for a field of C components;
Ising spins exactly ±1) with ``NAME.json`` beside it holding the theory's parameters
(``{"params": {"model": name, parameter: value, ...}}``) and how the ensemble was made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..checkpoint import atomic_write_bytes, save_npy
from ..errors import PhysdiffError
from .theory import make_theory, theory_from_params


def check_theory_params(model: str, L: int, values: dict | None = None, prefix: str = "theory."):
    """The theory ``model`` with parameter ``values`` on an L×L lattice, or a PhysdiffError naming
    the bad value (unknown model or parameter, out of range, no normalisable law)."""
    return make_theory(model, L, values, prefix)


def sidecar(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_ensemble(path: str | Path, x: np.ndarray, info: dict) -> None:
    """The ensemble and its JSON (parameters, acceptance, τ_int, ...), both atomically."""
    save_npy(path, x)
    atomic_write_bytes(sidecar(path), (json.dumps(info, indent=2, default=float) + "\n").encode())


def load_ensemble(path: str | Path) -> tuple[np.ndarray, dict]:
    """(x (N, L, L) float64, info) of an ensemble file, validated."""
    path = Path(path)
    if path.is_dir():
        raise PhysdiffError(f"ensemble file {str(path)!r} is a folder; give an (N, L, L) .npy file")
    if not path.is_file():
        raise PhysdiffError(f"ensemble file {str(path)!r} does not exist")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PhysdiffError(f"ensemble file {str(path)!r} is not a readable .npy array: {exc}") from None
    if (x.dtype.kind not in "fiu" or x.ndim not in (3, 4) or x.shape[-1] != x.shape[-2] or x.shape[-1] < 2
            or len(x) < 2):
        raise PhysdiffError(f"ensemble file {str(path)!r} has shape {x.shape} and dtype {x.dtype}; expected "
                            "(N, L, L) numbers with N >= 2 and L >= 2 (or (N, C, L, L) for C components)")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise PhysdiffError(f"ensemble file {str(path)!r} contains {int((~np.isfinite(x)).sum())} NaN/inf values")
    meta = sidecar(path)
    info = {}
    if meta.is_file():
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise PhysdiffError(f"ensemble parameters {str(meta)!r} are not valid JSON: {exc}") from None
    params = info.get("params") if isinstance(info, dict) else None
    if not isinstance(params, dict):
        raise PhysdiffError(f"ensemble {str(path)!r} has no parameters: {str(meta)!r} must hold "
                            '{"params": {"model": "phi4", "kappa": ..., "lam": ...}} '
                            'or {"params": {"model": "ising", "beta": ...}}')
    theory = theory_from_params(params)
    theory.validate(x.shape[-1])
    if tuple(x.shape[1:]) != theory.field_shape(x.shape[-1]):
        raise PhysdiffError(f"ensemble file {str(path)!r} has configurations of shape {x.shape[1:]}; theory "
                            f"{theory.name!r} has fields of shape {theory.field_shape(x.shape[-1])}")
    theory.check_samples(x, repr(str(path)))
    return x, info

"""Ensembles on disk: ``NAME.npy`` (N, L, L) float32 (Ising spins exactly ±1) with
``NAME.json`` beside it holding the theory's parameters and how the ensemble was made."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..checkpoint import atomic_write_bytes, save_npy
from ..errors import PhysdiffError
from .action import Ising, Phi4


def _coupling(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise PhysdiffError(f"{name} = {v!r} must be a finite number >= 0")
    return float(v)


def theory_from_params(params: dict):
    """Phi4 or Ising from {"model": ..., couplings} (an ensemble's JSON), every value checked."""
    model = params.get("model")
    if model == "phi4":
        return Phi4(_coupling("kappa", params.get("kappa")), _coupling("lam", params.get("lam")))
    if model == "ising":
        return Ising(_coupling("beta", params.get("beta")))
    raise PhysdiffError(f"unknown lattice model {model!r}; allowed: phi4, ising")


def check_theory_params(model: str, L: int, kappa=None, lam=None, beta=None):
    """The theory the parameters name on an L×L lattice, or a PhysdiffError naming the bad value."""
    if not isinstance(L, int) or L < 2:
        raise PhysdiffError(f"L = {L!r} is out of range; the lattice needs L >= 2")
    return theory_from_params({"model": model, "kappa": kappa, "lam": lam, "beta": beta})


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
    if x.dtype.kind not in "fiu" or x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[1] < 2 or len(x) < 2:
        raise PhysdiffError(f"ensemble file {str(path)!r} has shape {x.shape} and dtype {x.dtype}; expected "
                            "(N, L, L) numbers with N >= 2 and L >= 2")
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
    params = info.get("params")
    if not isinstance(params, dict):
        raise PhysdiffError(f"ensemble {str(path)!r} has no parameters: {str(meta)!r} must hold "
                            '{"params": {"model": "phi4", "kappa": ..., "lam": ...}} '
                            'or {"params": {"model": "ising", "beta": ...}}')
    theory = check_theory_params(params.get("model"), x.shape[1], params.get("kappa"), params.get("lam"),
                                 params.get("beta"))
    if isinstance(theory, Ising) and not np.isin(x, (-1.0, 1.0)).all():
        raise PhysdiffError(f"Ising ensemble {str(path)!r} holds values other than ±1")
    return x, info

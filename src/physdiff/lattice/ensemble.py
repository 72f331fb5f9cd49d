"""Ensembles on disk: ``NAME.npy`` (N, L, L) float32 ((N, C, L, L) for a field of C components;
Ising spins exactly ±1) with ``NAME.json`` beside it holding the theory's parameters
(``{"params": {"model": name, parameter: value, ...}}``) and how the ensemble was made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..checkpoint import bytes_writer, json_text, npy_writer, write_together
from ..errors import PhysdiffError
from .theory import make_theory, theory_from_params


def check_theory_params(model: str, L: int, values: dict | None = None, prefix: str = "theory."):
    """The theory ``model`` with parameter ``values`` on an L×L lattice, or a PhysdiffError naming
    the bad value (unknown model or parameter, out of range, no normalisable law)."""
    return make_theory(model, L, values, prefix)


def sidecar(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_ensemble(path: str | Path, x: np.ndarray, info: dict) -> None:
    """The ensemble and its JSON (parameters, acceptance, τ_int, ...), written together: both
    or neither (``checkpoint.write_together``), the JSON strict (no NaN)."""
    write_together([(Path(path), npy_writer(x)), (sidecar(path), bytes_writer((json_text(info) + "\n").encode()))])


def load_ensemble(path: str | Path) -> tuple[np.ndarray, dict]:
    """(x (N, L, L) float64, info) of an ensemble file, validated."""
    path = Path(path)
    if path.is_dir():
        raise PhysdiffError(f"ensemble file {str(path)!r} is a folder; give an (N, L, L) .npy file")
    if not path.is_file():
        raise PhysdiffError(f"ensemble file {str(path)!r} does not exist")
    from ..data import MAX_ABS_VALUE, read_npy

    x = read_npy(path, "ensemble file", "write configurations with numpy.save or physdiff mcmc")
    if (x.dtype.kind not in "fiu" or x.ndim not in (3, 4) or x.shape[-1] != x.shape[-2] or x.shape[-1] < 2
            or len(x) < 2):
        raise PhysdiffError(f"ensemble file {str(path)!r} has shape {x.shape} and dtype {x.dtype}; expected "
                            "(N, L, L) numbers with N >= 2 and L >= 2 (or (N, C, L, L) for C components)")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise PhysdiffError(f"ensemble file {str(path)!r} contains {int((~np.isfinite(x)).sum())} NaN/inf values")
    if np.abs(x).max() > MAX_ABS_VALUE:
        raise PhysdiffError(f"ensemble file {str(path)!r} holds values beyond ±{MAX_ABS_VALUE:g} (largest "
                            f"{np.abs(x).max():.3g}); their moments overflow, so no observable of it can be given")
    meta = sidecar(path)
    info = {}
    if meta.is_file():
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise PhysdiffError(f"ensemble parameters {str(meta)!r} are not valid JSON: {exc}") from None
        except RecursionError:
            raise PhysdiffError(f"ensemble parameters {str(meta)!r} are nested too deeply to be an ensemble's JSON "
                                "(a JSON object with \"params\")") from None
        if not isinstance(info, dict):
            raise PhysdiffError(f"ensemble parameters {str(meta)!r} hold a JSON {type(info).__name__}; expected an "
                                'object such as {"params": {"model": "phi4", "kappa": ..., "lam": ...}}')
    params = info.get("params")
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
    check_claims(info, x, repr(str(path)))
    return x, info


def check_claims(info: dict, x: np.ndarray, where: str) -> None:
    """What an ensemble's JSON says about its array must be true of it: ``L`` its lattice size,
    ``n`` its number of configurations, ``chains`` a positive integer that divides it (the
    configurations are chain-major)."""
    n, L = len(x), x.shape[-1]
    for key, actual in (("L", L), ("n", n)):
        if key in info and (isinstance(info[key], bool) or info[key] != actual):
            raise PhysdiffError(f"ensemble {where}: its JSON says {key} = {info[key]!r} but the array has "
                                f"{key} = {actual} (shape {x.shape}); the JSON belongs to another file")
    rows = info.get("chain_index")
    if rows is not None and (not isinstance(rows, list) or len(rows) != n):
        raise PhysdiffError(f"ensemble {where}: its JSON's chain_index must list one proposal per configuration "
                            f"({n}); it does not, so the JSON belongs to another file")
    chains = info.get("chains", 1)
    if isinstance(chains, bool) or not isinstance(chains, int) or chains < 1 or n % chains:
        raise PhysdiffError(f"ensemble {where}: chains = {chains!r} in its JSON must be a positive integer that "
                            f"divides the {n} configurations")


def ensemble_chains(info: dict) -> int:
    """The number of chains of an ensemble checked by :func:`load_ensemble` (1 when not recorded)."""
    return info.get("chains", 1)

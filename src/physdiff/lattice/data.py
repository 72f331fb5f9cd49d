"""Lattice training sets made by the reference Monte Carlo, cached on disk, and the theory a
run's config names."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..errors import PhysdiffError
from ..provenance import current, recorded
from .ensemble import load_ensemble, save_ensemble
from .mc import run_mcmc
from .theory import Theory, get_theory, make_theory, random_lattice_symmetry  # noqa: F401  (re-exported)


def cache_dir() -> Path:
    return Path(os.environ.get("PHYSDIFF_CACHE", Path.home() / ".cache" / "physdiff"))


def theory_of(cfg) -> Theory:
    """The theory a config names: ``data.dataset`` with the parameters of its [theory] table; a
    coupling given as a range [lo, hi] (a coupling-conditioned run, ``conditioning.py``) at the
    range's centre."""
    table = dict(cfg.theory)
    if "L" not in table:
        raise PhysdiffError(f"data.dataset = {cfg.data.dataset!r} is not a lattice theory; this config has no [theory]")
    L = table.pop("L")
    table = {k: 0.5 * (v[0] + v[1]) if isinstance(v, list | tuple) else v for k, v in table.items()}
    return make_theory(cfg.data.dataset, L, table)


def embedding_of(cfg):
    """The continuous embedding a lattice config trains on (``embedding.py``), or None when the
    model learns the theory's field itself (``data.embedding = "none"``, and every real field)."""
    return theory_of(cfg).embedding(resolve_embedding(cfg), cfg.theory["L"], cfg.data.embedding_shift)


def resolve_embedding(cfg) -> str:
    """``data.embedding`` with ``auto`` resolved: the lattice theory's default embedding, else "none"."""
    if cfg.data.embedding != "auto":
        return cfg.data.embedding
    if not cfg.theory:
        return "none"
    return get_theory(cfg.data.dataset).default_embedding


@recorded
def lattice_training_set(theory: Theory, L: int, n_train: int, seed: int, log=None,
                         progress=None) -> tuple[np.ndarray, dict]:
    """(x (N, *field), info): the Monte Carlo ensemble of ``theory`` on an L×L lattice, at least
    n_train configurations from ``seed``, made once (``progress``: of its sweeps, ``progress.py``)
    and cached in $PHYSDIFF_CACHE/lattice/ with its JSON (and that JSON's provenance)."""
    chains = 16
    n = -(-n_train // chains) * chains
    key = json.dumps({**theory.params, "L": L, "n": n, "seed": seed}, sort_keys=True)
    path = cache_dir() / "lattice" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    if path.is_file():
        try:
            return load_ensemble(path)
        except PhysdiffError:
            pass  # a damaged cache entry is made again
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PhysdiffError(f"cache folder {str(path.parent)!r} cannot be created ({exc.strerror}); "
                            "set PHYSDIFF_CACHE to a writable folder") from None
    x, report = run_mcmc(theory, L, n, seed=seed, chains=chains, log=log, progress=progress)
    therm = report["thermalisation"]
    frozen_alike = not therm.get("comparable", True) and all(  # zero errors: frozen chains, equal or not
        v["hot"] == v["cold"] for v in therm.values() if isinstance(v, dict))
    if not therm["agree"] and not frozen_alike:
        raise PhysdiffError(f"the Monte Carlo training set of {theory.params} failed its thermalisation check "
                            f"(hot and cold starts disagree: {report['thermalisation']})")
    info = {"params": theory.params, "generator": "physdiff mcmc", **report,
            "provenance": current().record("cpu")}
    save_ensemble(path, x, info)
    return x.astype(np.float32).astype(np.float64), info

"""Lattice training sets made by the reference Monte Carlo, cached on disk, and the symmetry
transforms of the periodic lattice used as augmentation."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..data.kinds import LATTICE_DATASETS  # noqa: F401  (re-exported)
from ..errors import PhysdiffError
from .ensemble import check_theory_params, load_ensemble, save_ensemble
from .mc import run_mcmc


def cache_dir() -> Path:
    return Path(os.environ.get("PHYSDIFF_CACHE", Path.home() / ".cache" / "physdiff"))


def theory_of(data_cfg):
    """The Phi4 or Ising theory a [data] config names."""
    return check_theory_params(data_cfg.dataset, data_cfg.L, data_cfg.kappa, data_cfg.lam, data_cfg.beta)


def lattice_training_set(data_cfg, log=None) -> tuple[np.ndarray, dict]:
    """(x (N, L, L), info): the Monte Carlo ensemble of the config's theory, n_train
    configurations from seed data.seed, made once and cached in $PHYSDIFF_CACHE/lattice/."""
    theory = theory_of(data_cfg)
    chains = 16
    n = -(-data_cfg.n_train // chains) * chains
    key = json.dumps({**theory.params, "L": data_cfg.L, "n": n, "seed": data_cfg.seed}, sort_keys=True)
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
    x, report = run_mcmc(theory, data_cfg.L, n, seed=data_cfg.seed, chains=chains, log=log)
    therm = report["thermalisation"]
    frozen_alike = not therm.get("comparable", True) and all(  # zero errors: frozen chains, equal or not
        v["hot"] == v["cold"] for v in therm.values() if isinstance(v, dict))
    if not therm["agree"] and not frozen_alike:
        raise PhysdiffError(f"the Monte Carlo training set of {theory.params} failed its thermalisation check "
                            f"(hot and cold starts disagree: {report['thermalisation']})")
    info = {"params": theory.params, "generator": "physdiff mcmc", **report}
    save_ensemble(path, x, info)
    return x.astype(np.float32).astype(np.float64), info


def random_lattice_symmetry(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random element of the symmetry group of the periodic square lattice per sample: a
    translation (L² choices), a rotation by a multiple of 90° and a reflection. x: (B, C, L, L)."""
    B, _, L, _ = x.shape
    dev = x.device
    shift = torch.randint(L, (B, 2), generator=generator, device=dev)
    ar = torch.arange(L, device=dev)
    rows = (ar[None, :] + shift[:, :1]) % L  # (B, L)
    cols = (ar[None, :] + shift[:, 1:]) % L
    b = torch.arange(B, device=dev)[:, None, None]
    x = x.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    k = torch.randint(4, (B,), generator=generator, device=dev)
    flip = torch.randint(2, (B,), generator=generator, device=dev).bool()
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    out = x.clone()
    for r in range(1, 4):
        sel = k == r
        out[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
    return out

"""Distances between a set of model samples and a reference set, each with its noise floor.

A distance between finite samples is never zero even for a perfect model. So every
distance is reported beside its *noise floor*: the same distance between two independent
sets drawn from the true distribution, of the same size. A model is as good as the data
can tell when its distance is within a small factor of the floor.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(len(x), -1)


def sliced_wasserstein(x, y, n_projections: int = 512, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015):
    SW₂(x, y) = ( E_θ W₂²(θᵀx, θᵀy) )^½ over θ uniform on the unit sphere, with the
    1D W₂ of two equal-size samples from their sorted values. x, y: (N, D) with equal N."""
    x, y = _as_tensor(x), _as_tensor(y)
    if x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein needs sets of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    theta /= theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def _mean_pairwise_distance(a: torch.Tensor, b: torch.Tensor, same: bool, chunk: int = 2048) -> float:
    total, count = 0.0, 0
    for i in range(0, len(a), chunk):
        d = torch.cdist(a[i:i + chunk], b)
        total += float(d.sum())
        count += d.numel()
    if same:  # drop the zero diagonal: unbiased U-statistic
        count -= len(a)
    return total / count


def energy_distance(x, y) -> float:
    """Energy distance (Székely & Rizzo 2013): 2E‖X-Y‖ - E‖X-X'‖ - E‖Y-Y'‖, unbiased
    U-statistic form. Zero iff the two laws are equal. x: (N, D), y: (M, D)."""
    x, y = _as_tensor(x), _as_tensor(y)
    return (2 * _mean_pairwise_distance(x, y, False) - _mean_pairwise_distance(x, x, True)
            - _mean_pairwise_distance(y, y, True))


def mean_error(x, mean) -> float:
    """‖mean(x) - μ‖₂."""
    return float(np.linalg.norm(np.asarray(x).mean(0) - np.asarray(mean)))


def covariance_error(x, cov) -> float:
    """‖Cov(x) - Σ‖_F (sample covariance with 1/(N-1))."""
    return float(np.linalg.norm(np.cov(np.asarray(x), rowvar=False).reshape(np.shape(cov)) - np.asarray(cov)))


def compare(samples: np.ndarray, references: list[np.ndarray], floor_references: list[np.ndarray], *,
            toy=None, n_projections: int = 512, seed: int = 0) -> dict[str, dict[str, float]]:
    """Every metric of ``samples`` against true sets, each beside its noise floor.

    ``references`` and ``floor_references``: R pairs of independent true sets of the size of
    ``samples``. A distance's *value* is its mean over the R references; its *floor* is the
    root mean square of the same distance between the R pairs of true sets — the level a
    perfect model would reach (for the unbiased energy distance, which can be negative, the
    RMS is its null spread). ``toy``: a ToyDataset for the mixture and exact-density rows.

    Returns {metric: {"value": v, "floor": f}}. For ``log_density`` the value is the average
    true log-density of model samples and the floor that of true samples (a match is the
    goal, not a minimum); ``in_support`` is the fraction of samples of non-zero density.
    """
    def row(fn):
        value = float(np.mean([fn(samples, ref) for ref in references]))
        floor = float(np.sqrt(np.mean([fn(a, b) ** 2 for a, b in zip(floor_references, references, strict=True)])))
        return {"value": value, "floor": floor}

    out = {"sliced_wasserstein": row(lambda a, b: sliced_wasserstein(a, b, n_projections, seed)),
           "energy_distance": row(energy_distance)}
    if toy is not None and toy.mixture is not None:
        mu, cov = toy.mixture.mean().numpy(), toy.mixture.covariance().numpy()
        out["mean_error"] = {"value": mean_error(samples, mu),
                             "floor": float(np.sqrt(np.mean([mean_error(f, mu) ** 2 for f in floor_references])))}
        out["cov_error"] = {"value": covariance_error(samples, cov),
                            "floor": float(np.sqrt(np.mean([covariance_error(f, cov) ** 2 for f in floor_references])))}
    if toy is not None and toy.log_prob_fn is not None:
        lp_model, lp_true = toy.log_prob(samples), toy.log_prob(floor_references[0])
        finite = np.isfinite(lp_model)
        out["in_support"] = {"value": float(finite.mean()), "floor": float(np.isfinite(lp_true).mean())}
        mean_lp = float(lp_model[finite].mean()) if finite.any() else -math.inf
        out["log_density"] = {"value": mean_lp, "floor": float(lp_true[np.isfinite(lp_true)].mean())}
    return out

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

from . import seeding


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(len(x), -1)


def sliced_wasserstein(x, y, n_projections: int = 512, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015):
    SW₂(x, y) = ( E_θ W₂²(θᵀx, θᵀy) )^½ over θ uniform on the unit sphere, with the
    1D W₂ of two equal-size samples from their sorted values. x, y: (N, D) with equal N."""
    x, y = _as_tensor(x), _as_tensor(y)
    if x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein needs sets of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    g = seeding.generator(seed)
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


def far_outliers(x: np.ndarray, lo, hi, margin: float) -> np.ndarray:
    """(N,) bool: rows of x (N, ...) with a value outside [lo − m·w, hi + m·w], w = hi − lo,
    m = ``margin`` (lo, hi: scalars or per-dimension arrays broadcastable to a row)."""
    w = np.asarray(hi) - np.asarray(lo)
    out = (x < lo - margin * w) | (x > hi + margin * w)
    return out.reshape(len(x), -1).any(1)


def compare(samples, references: list[np.ndarray], floor_references: list[np.ndarray], *,
            toy=None, n_projections: int = 512, seed: int = 0) -> dict[str, dict[str, float]]:
    """Every metric of ``samples`` against true sets, each beside its noise floor.

    ``references`` and ``floor_references``: R pairs of independent true sets of the size of
    ``samples``; ``samples``: one set (N, D) compared with every reference, or a list of R
    disjoint sets, the r-th compared with reference r. A distance's *value* is its mean over
    the R pairs; its *floor* is the root mean square of the same distance between the R pairs
    of true sets — the level a perfect model would reach (for the unbiased energy distance,
    which can be negative, the RMS is its null spread). ``toy``: a ToyDataset for the mixture
    and exact-density rows.

    Returns {metric: {"value": v, "floor": f}}; the distances of which value/floor is read
    (sliced_wasserstein, mean_error, cov_error) also carry "ratio" and "ratio_error", the
    bootstrap over the R pairs of ``stats.ratio_bootstrap`` (NaN for one pair). For
    ``log_density`` the value is the average true log-density of model samples and the floor
    that of true samples (a match is the goal, not a minimum); ``in_support`` is the fraction of
    samples of non-zero density.
    """
    from .stats import ratio_bootstrap

    sets = list(samples) if isinstance(samples, list | tuple) else [samples] * len(references)
    samples = np.concatenate(sets) if isinstance(samples, list | tuple) else samples

    def with_ratio(values, floors):
        ratio, error = ratio_bootstrap(values, floors, seed=seed)
        return {"value": float(np.mean(values)), "floor": float(np.sqrt(np.mean(np.square(floors)))),
                "ratio": ratio, "ratio_error": error}

    def row(fn, ratio=False):
        values = [fn(s, ref) for s, ref in zip(sets, references, strict=True)]
        floors = [fn(a, b) for a, b in zip(floor_references, references, strict=True)]
        out = with_ratio(values, floors)
        return out if ratio else {"value": out["value"], "floor": out["floor"]}

    out = {"sliced_wasserstein": row(lambda a, b: sliced_wasserstein(a, b, n_projections, seed), ratio=True),
           "energy_distance": row(energy_distance)}
    if toy is not None and toy.mixture is not None:
        mu, cov = toy.mixture.mean().numpy(), toy.mixture.covariance().numpy()
        out["mean_error"] = with_ratio(mean_error(samples, mu), [mean_error(f, mu) for f in floor_references])
        out["cov_error"] = with_ratio(covariance_error(samples, cov),
                                      [covariance_error(f, cov) for f in floor_references])
    if toy is not None and toy.log_prob_fn is not None:
        lp_model, lp_true = toy.log_prob(samples), toy.log_prob(floor_references[0])
        finite = np.isfinite(lp_model)
        out["in_support"] = {"value": float(finite.mean()), "floor": float(np.isfinite(lp_true).mean())}
        mean_lp = float(lp_model[finite].mean()) if finite.any() else -math.inf
        out["log_density"] = {"value": mean_lp, "floor": float(lp_true[np.isfinite(lp_true)].mean())}
    return out


# ---------------------------------------------------------------- image metrics (feature space)


def frechet_distance(f1, f2) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, eq. 6):
    ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½). f1: (N, F), f2: (M, F). Biased upwards for small
    sets, so compare it only with a floor computed at the same set sizes."""
    f1, f2 = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    # Tr (Σ₁Σ₂)^½ = Σ √λ(Σ₁^½ Σ₂ Σ₁^½): a symmetric PSD eigenproblem, stable even when the
    # covariances are singular (fewer samples than features)
    lam, vec = np.linalg.eigh(s1)
    s1_half = (vec * np.sqrt(np.clip(lam, 0, None))) @ vec.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(s1_half @ s2 @ s1_half), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def _kth_neighbour_radius(f: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of f to its k-th nearest other row (k capped at len(f) - 1)."""
    if len(f) < 2:
        raise ValueError("precision/recall need at least 2 vectors per set")
    d = torch.cdist(f, f)
    return d.kthvalue(min(k, len(f) - 1) + 1, dim=1).values  # + 1: the row itself is at distance 0


def _covered(query: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """For each query row: is it inside some ball (support_j, radii_j)?"""
    out = []
    for i in range(0, len(query), chunk):
        out.append((torch.cdist(query[i:i + chunk], support) <= radii[None]).any(dim=1))
    return torch.cat(out)


def precision_recall(real, fake, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eqs. 1-2): the real (fake)
    manifold is the union of balls around each real (fake) feature vector reaching its k-th
    nearest neighbour; precision = share of fake vectors inside the real manifold (fidelity),
    recall = share of real vectors inside the fake manifold (diversity)."""
    r, f = _as_tensor(real), _as_tensor(fake)
    precision = _covered(f, r, _kth_neighbour_radius(r, k)).double().mean()
    recall = _covered(r, f, _kth_neighbour_radius(f, k)).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def nearest(query, support, chunk: int = 2048, support_chunk: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query row's nearest support row (Euclidean, flattened). The
    distance matrix is made in blocks of ``chunk`` × ``support_chunk`` (≤ 270 MB in float64),
    so a support of a million rows (a user's data file) fits in memory."""
    q, s = _as_tensor(query), _as_tensor(support)
    dist, idx = [], []
    for i in range(0, len(q), chunk):
        best = torch.full((len(q[i:i + chunk]),), torch.inf, dtype=torch.float64)
        where = torch.zeros(len(best), dtype=torch.long)
        for k in range(0, len(s), support_chunk):
            d, j = torch.cdist(q[i:i + chunk], s[k:k + support_chunk]).min(dim=1)
            closer = d < best  # ties keep the earlier row, as one min over all rows does
            best = torch.where(closer, d, best)
            where = torch.where(closer, j + k, where)
        dist.append(best)
        idx.append(where)
    return torch.cat(dist).numpy(), torch.cat(idx).numpy()


def memorisation(samples, train, test, quantile: float = 0.01) -> dict[str, float]:
    """Share of samples closer (in pixels) to their nearest training image than all but a
    ``quantile`` of held-out test images are to theirs. Fresh images from the data law give
    ``quantile`` on average; a model that copies training images gives up to 1."""
    d_test, _ = nearest(test, train)
    threshold = float(np.quantile(d_test, quantile))
    d_samples, _ = nearest(samples, train)
    return {"share": float((d_samples < threshold).mean()), "expected_for_fresh_data": quantile,
            "threshold": threshold, "median_nn_distance": float(np.median(d_samples)),
            "median_nn_distance_test": float(np.median(d_test))}

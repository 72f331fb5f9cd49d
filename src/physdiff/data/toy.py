"""2D toy distributions, each drawn from a seed, with exact log-densities where they exist.

``gaussian``, ``two_gaussians`` and ``eight_gaussians`` are Gaussian mixtures (exact density,
mean and covariance); ``checkerboard`` is uniform on 8 unit squares (exact density 1/8
inside, 0 outside); the others (``spiral``, ``moons``, ``swiss_roll``, ``rings``) are
curves blurred by Gaussian noise, with no closed-form density.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..analytic import GaussianMixture


@dataclass(frozen=True)
class ToyDataset:
    """A named 2D distribution. ``sample(n, rng)`` → (n, 2) float64; ``log_prob(x)`` → (n,)
    float64 (−inf outside the support) or None; ``mixture`` is set for Gaussian mixtures."""

    name: str
    description: str
    sample_fn: Callable[[int, np.random.Generator], np.ndarray]
    log_prob_fn: Callable[[np.ndarray], np.ndarray] | None = None
    mixture: GaussianMixture | None = None

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.sample_fn(int(n), np.random.default_rng(seed))

    def log_prob(self, x: np.ndarray) -> np.ndarray | None:
        return None if self.log_prob_fn is None else self.log_prob_fn(np.asarray(x, dtype=np.float64))


def _mixture_dataset(name, description, mixture: GaussianMixture) -> ToyDataset:
    return ToyDataset(name, description, mixture.sample,
                      lambda x: mixture.log_prob(torch.from_numpy(x)).numpy(), mixture)


def gaussian(mean=(1.0, -0.5), cov=((1.0, 0.6), (0.6, 0.5))) -> ToyDataset:
    """A correlated 2D Gaussian N(mean, cov) (any dimension if mean/cov are longer)."""
    mix = GaussianMixture([list(mean)], [np.asarray(cov, dtype=np.float64)])
    return _mixture_dataset("gaussian", "one correlated Gaussian", mix)


def two_gaussians(separation: float = 4.0, std: float = 0.5) -> ToyDataset:
    """Equal mixture of N((±separation/2, 0), std² I)."""
    h = separation / 2
    mix = GaussianMixture([[-h, 0.0], [h, 0.0]], [np.eye(2) * std**2] * 2)
    return _mixture_dataset("two_gaussians", "two well-separated Gaussians", mix)


def eight_gaussians(radius: float = 2.0, std: float = 0.2) -> ToyDataset:
    """Equal mixture of 8 Gaussians on a circle."""
    angles = np.arange(8) * 2 * math.pi / 8
    means = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    mix = GaussianMixture(means, [np.eye(2) * std**2] * 8)
    return _mixture_dataset("eight_gaussians", "eight Gaussians on a circle", mix)


def _spiral(n, rng, noise=0.05):
    # Archimedean spiral r ∝ θ over 1.75 turns, points uniform in θ, then blurred.
    theta = rng.uniform(0.5 * math.pi, 4.0 * math.pi, n)
    r = theta / (4.0 * math.pi)
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
    return x + noise * rng.standard_normal((n, 2))


def _moons(n, rng, noise=0.05):
    # Two interleaved half circles (the usual "moons"), unit radius.
    upper = rng.random(n) < 0.5
    a = rng.uniform(0.0, math.pi, n)
    x = np.where(upper[:, None], np.stack([np.cos(a), np.sin(a)], 1),
                 np.stack([1.0 - np.cos(a), 0.5 - np.sin(a)], 1))
    return x + noise * rng.standard_normal((n, 2))


def _swiss_roll(n, rng, noise=0.25):
    # The 2D swiss roll: t = 1.5π(1 + 2u), (t cos t, t sin t)/5.
    t = 1.5 * math.pi * (1.0 + 2.0 * rng.random(n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], 1)
    return (x + noise * rng.standard_normal((n, 2))) / 5.0


def _rings(n, rng, noise=0.05, radii=(0.5, 1.0, 1.5)):
    # Concentric circles, points shared in proportion to the circumference.
    radii = np.asarray(radii)
    which = rng.choice(len(radii), size=n, p=radii / radii.sum())
    a = rng.uniform(0.0, 2 * math.pi, n)
    x = radii[which, None] * np.stack([np.cos(a), np.sin(a)], 1)
    return x + noise * rng.standard_normal((n, 2))


def _checkerboard(n, rng):
    # Uniform on the 8 "black" unit squares of a 4×4 board on [-2, 2]²: (i + j) even.
    cells = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
    pick = cells[rng.integers(0, len(cells), n)]
    return pick + rng.random((n, 2)) - 2.0


def _checkerboard_log_prob(x):
    inside = np.all((x >= -2.0) & (x < 2.0), axis=1)
    ij = np.floor(x + 2.0).astype(np.int64)
    black = (ij.sum(1) % 2) == 0
    return np.where(inside & black, math.log(1.0 / 8.0), -np.inf)


def _registry() -> dict[str, Callable[[], ToyDataset]]:
    return {
        "gaussian": gaussian,
        "two_gaussians": two_gaussians,
        "spiral": lambda: ToyDataset("spiral", "an Archimedean spiral", _spiral),
        "moons": lambda: ToyDataset("moons", "two interleaved half circles", _moons),
        "eight_gaussians": eight_gaussians,
        "checkerboard": lambda: ToyDataset("checkerboard", "uniform on 8 squares",
                                           _checkerboard, _checkerboard_log_prob),
        "swiss_roll": lambda: ToyDataset("swiss_roll", "the 2D swiss roll", _swiss_roll),
        "rings": lambda: ToyDataset("rings", "three concentric rings", _rings),
    }


TOY_DATASETS = tuple(_registry())


def get_toy(name: str) -> ToyDataset:
    """The toy dataset called ``name`` (one of TOY_DATASETS)."""
    reg = _registry()
    if name not in reg:
        raise KeyError(name)
    return reg[name]()

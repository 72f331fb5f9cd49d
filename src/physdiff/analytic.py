"""Closed-form results for Gaussian-mixture data: densities and the optimal denoiser.

If x_0 ~ Σ_k π_k N(m_k, C_k) then x_t = √ᾱ x_0 + √(1-ᾱ) ε is again a mixture,
p_t = Σ_k π_k N(√ᾱ m_k, ᾱ C_k + (1-ᾱ) I), and the minimiser of the ε-prediction loss is
ε*(x_t, t) = E[ε | x_t] = -√(1-ᾱ) ∇ log p_t(x_t) (Tweedie's formula; Ho et al. 2020,
sec. 3.2 with Song et al. 2021, eq. 5). This gives samplers and likelihoods a test with no
training in it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .schedule import Schedule


class GaussianMixture:
    """Σ_k π_k N(m_k, C_k) in D dimensions. means: (K, D), covs: (K, D, D), weights: (K,)."""

    def __init__(self, means, covs, weights=None):
        self.means = torch.as_tensor(np.asarray(means, dtype=np.float64))
        self.covs = torch.as_tensor(np.asarray(covs, dtype=np.float64))
        K, D = self.means.shape
        if self.covs.shape != (K, D, D):
            raise ValueError(f"covs must have shape {(K, D, D)}, got {tuple(self.covs.shape)}")
        w = np.full(K, 1.0 / K) if weights is None else np.asarray(weights, dtype=np.float64)
        self.weights = torch.as_tensor(w / w.sum())
        evals = torch.linalg.eigvalsh(self.covs)
        if (evals <= 0).any():
            raise ValueError("every covariance must be positive definite")

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> torch.Tensor:
        """Law of total covariance: Σ π_k (C_k + m_k m_kᵀ) - m mᵀ."""
        m = self.mean()
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - torch.outer(m, m)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws, (n, D) float64, from a NumPy generator."""
        comp = rng.choice(len(self.weights), size=n, p=self.weights.numpy())
        chol = torch.linalg.cholesky(self.covs).numpy()
        z = rng.standard_normal((n, self.dim))
        return self.means.numpy()[comp] + np.einsum("nij,nj->ni", chol[comp], z)

    def noised(self, alpha_bar: float) -> GaussianMixture:
        """The law of √ᾱ x_0 + √(1-ᾱ) ε."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(math.sqrt(alpha_bar) * self.means,
                               alpha_bar * self.covs + (1 - alpha_bar) * eye, self.weights)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), x: (B, D) → (B,) float64."""
        x = torch.as_tensor(x, dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(self.means, covariance_matrix=self.covs)
        comp = dist.log_prob(x[:, None, :])  # (B, K)
        return torch.logsumexp(comp + self.weights.log(), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """∇ log p(x), x: (B, D) → (B, D) float64."""
        x = torch.as_tensor(x, dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(self.means, covariance_matrix=self.covs)
        resp = torch.softmax(dist.log_prob(x[:, None, :]) + self.weights.log(), dim=1)  # (B, K)
        diff = x[:, None, :] - self.means  # (B, K, D)
        grads = -torch.linalg.solve(self.covs, diff.unsqueeze(-1)).squeeze(-1)  # -C_k⁻¹(x - m_k)
        return (resp[:, :, None] * grads).sum(1)


class OptimalEpsilon:
    """The exact ε-predictor for Gaussian-mixture data under a schedule:
    ε*(x_t, t) = -√(1-ᾱ_t) ∇ log p_t(x_t). Callable as ``model(x, t, cond=None)``.

    ``x``: (B, D) in the same units as the mixture; evaluates in float64 and returns
    ``x``'s dtype. The noised mixture of each timestep is cached.
    """

    def __init__(self, mixture: GaussianMixture, sched: Schedule):
        self.mixture, self.sched = mixture, sched
        self._cache: dict[int, GaussianMixture] = {}

    def marginal(self, i: int) -> GaussianMixture:
        if i not in self._cache:
            self._cache[i] = self.mixture.noised(float(self.sched.alpha_bar[i]))
        return self._cache[i]

    def __call__(self, x, t, cond=None):
        """t: (B,) integer indices, or floating fractional indices (for ODE solvers)."""
        from .schedule import alpha_bar_at

        out = torch.empty_like(x, dtype=torch.float64)
        t_cpu = t.cpu()
        for i in torch.unique(t_cpu).tolist():
            rows = (t_cpu == i).nonzero().squeeze(1).to(x.device)
            if t.is_floating_point():
                ab = float(alpha_bar_at(self.sched, i))
                marginal = self.mixture.noised(ab)
            else:
                ab = float(self.sched.alpha_bar[int(i)])
                marginal = self.marginal(int(i))
            out[rows] = -math.sqrt(1.0 - ab) * marginal.score(x[rows].double().cpu()).to(x.device)
        return out.to(x.dtype)

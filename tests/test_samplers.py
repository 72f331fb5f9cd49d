"""Samplers driven by the exact ε-predictor of Gaussian data: no training involved."""

import numpy as np
import pytest
import torch

from conftest import k_sigma
from physdiff.analytic import GaussianMixture, OptimalEpsilon
from physdiff.samplers import CountingModel, IndexedNoise, ddpm_sample, sample_with_trajectory
from physdiff.schedule import make_schedule


def exact_ddpm_output_law(m, C, sched, variance):
    """Mean and covariance of DDPM's output when driven by the optimal ε for x_0 ~ N(m, C).

    Every step is linear-Gaussian: E[x_0|x_t] = m + a C (a²C + s²I)⁻¹ (x_t - a m), so
    x_{t-1} = c0 E[x_0|x_t] + c1 x_t + σ z maps N(μ, S) to N(Aμ + b, A S Aᵀ + σ² I).
    Written here independently of physdiff.diffusion, from Ho et al. 2020 eqs. 4, 7.
    """
    D = len(m)
    mu, S = np.zeros(D), np.eye(D)
    betas = sched.betas.numpy()
    ab = np.cumprod(1 - betas)
    for i in reversed(range(len(betas))):
        a, s2 = np.sqrt(ab[i]), 1 - ab[i]
        ab_prev = ab[i - 1] if i > 0 else 1.0
        K = a * C @ np.linalg.inv(a**2 * C + s2 * np.eye(D))
        c0 = np.sqrt(ab_prev) * betas[i] / (1 - ab[i])
        c1 = np.sqrt(1 - betas[i]) * (1 - ab_prev) / (1 - ab[i])
        A = c0 * K + c1 * np.eye(D)
        b = c0 * (m - K @ (a * m))
        sigma2 = 0.0 if i == 0 else (betas[i] if variance == "beta" else betas[i] * (1 - ab_prev) / (1 - ab[i]))
        mu, S = A @ mu + b, A @ S @ A.T + sigma2 * np.eye(D)
    return mu, S


def _run(mix, sched, variance, n=20_000, seed=0):
    model = CountingModel(OptimalEpsilon(mix, sched))
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, mix.dim, generator=g, dtype=torch.float64)
    x = ddpm_sample(model, sched, x_T, variance=variance, generator=g).samples.numpy()
    return x, model.nfe


@pytest.mark.parametrize("name,T,variance", [("linear", 1000, "beta"), ("linear", 1000, "beta_tilde"),
                                             ("linear", 50, "beta"), ("cosine", 50, "beta"),
                                             ("cosine", 20, "beta_tilde")])
def test_ddpm_with_optimal_eps_matches_exact_output_law(gaussian_2d, name, T, variance):
    sched = make_schedule(name, T, warn=False)
    x, nfe = _run(gaussian_2d, sched, variance)
    assert nfe == T
    m, C = gaussian_2d.means[0].numpy(), gaussian_2d.covs[0].numpy()
    mu, S = exact_ddpm_output_law(m, C, sched, variance)
    n = len(x)
    assert k_sigma(x.mean(0), mu, np.sqrt(np.diag(S) / n))
    cov = np.cov(x, rowvar=False)
    se = np.sqrt((S**2 + np.outer(np.diag(S), np.diag(S))) / n)  # Var of a sample covariance entry
    assert k_sigma(cov, S, se)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_reproduces_data_mean_and_covariance_at_T_1000(gaussian_2d, variance):
    """The theory check: at T = 1000 the sampler's law is the data law (to ~1%)."""
    sched = make_schedule("linear", 1000)
    m, C = gaussian_2d.means[0].numpy(), gaussian_2d.covs[0].numpy()
    mu, S = exact_ddpm_output_law(m, C, sched, variance)
    np.testing.assert_allclose(mu, m, atol=1e-3)
    np.testing.assert_allclose(S, C, atol=0.012)


def test_ddpm_short_schedule_with_beta_reproduces_data(gaussian_2d):
    sched = make_schedule("linear", 50)
    x, _ = _run(gaussian_2d, sched, "beta", n=40_000, seed=3)
    m, C = gaussian_2d.means[0].numpy(), gaussian_2d.covs[0].numpy()
    n = len(x)
    assert k_sigma(x.mean(0), m, np.sqrt(np.diag(C) / n), k=5)
    se = np.sqrt((C**2 + np.outer(np.diag(C), np.diag(C))) / n)
    # allowance of 0.015 for the known discretisation error at T = 50 (exact law above)
    assert np.all(np.abs(np.cov(x, rowvar=False) - C) <= 5 * se + 0.015)


def test_ddpm_reproduces_two_gaussians():
    mix = GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], [np.eye(2) * 0.25] * 2)
    sched = make_schedule("linear", 200)
    x, _ = _run(mix, sched, "beta", n=20_000, seed=5)
    right = x[:, 0] > 0
    n = len(x)
    assert k_sigma(right.mean(), 0.5, 0.5 / np.sqrt(n))
    assert k_sigma(x[right].mean(0), [2.0, 0.0], 0.5 / np.sqrt(right.sum()))
    assert k_sigma(x[right].std(0), [0.5, 0.5], 0.5 / np.sqrt(2 * right.sum()), k=6)


def test_indexed_noise_is_independent_of_batching():
    full = IndexedNoise(7, 0, 300, block=64).randn_like(torch.empty(300, 3))
    parts = [IndexedNoise(7, lo, min(128, 300 - lo), block=64).randn_like(torch.empty(min(128, 300 - lo), 3))
             for lo in range(0, 300, 128)]
    torch.testing.assert_close(torch.cat(parts), full, rtol=0, atol=0)
    other = IndexedNoise(8, 0, 300, block=64).randn_like(torch.empty(300, 3))
    assert not torch.allclose(full, other)
    # any start, not only block boundaries: samples 10..79 straddle two blocks
    mid = IndexedNoise(7, 10, 70, block=64).randn_like(torch.empty(70, 3))
    torch.testing.assert_close(mid, full[10:80], rtol=0, atol=0)


def test_trajectory_and_seed_reproducibility(gaussian_2d):
    sched = make_schedule("linear", 30)
    model = OptimalEpsilon(gaussian_2d, sched)
    x_T = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    out, traj = sample_with_trajectory(ddpm_sample, model, sched, x_T, generator=torch.Generator().manual_seed(1))
    out = out.samples
    assert traj.shape == (30, 100, 2)
    torch.testing.assert_close(traj[-1], out)
    again = ddpm_sample(model, sched, x_T, generator=torch.Generator().manual_seed(1)).samples
    assert torch.equal(out, again)
    assert torch.equal(x_T, torch.randn(100, 2, generator=torch.Generator().manual_seed(0)))  # input untouched

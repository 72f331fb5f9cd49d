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


def test_indexed_noise_stream_is_pinned():
    """A seeded sample set is reproducible across versions: the stream of (seed, sample index) is
    fixed by the default block of 64 and NumPy's PCG64 seeded by SeedSequence([seed, block]). Blocks that end one past a
    boundary (65 samples) and samples with several axes draw whole blocks."""
    from physdiff.samplers import randn_like

    first = IndexedNoise(0, 0, 2).randn_like(torch.empty(2, 2, dtype=torch.float64))
    torch.testing.assert_close(first, torch.tensor([[0.1257302210933933, -0.1321048632913019],
                                                    [0.6404226504432821, 0.10490011715303971]], dtype=torch.float64))
    later = IndexedNoise(0, 130, 1).randn_like(torch.empty(1, 2))
    torch.testing.assert_close(later, torch.tensor([[-1.5641198470124649, -0.9617679017183549]]))
    full = IndexedNoise(3, 0, 65).randn_like(torch.empty(65, 2, 3))
    assert full.shape == (65, 2, 3)
    torch.testing.assert_close(randn_like(torch.empty(1, 2, 3), IndexedNoise(3, 64, 1)), full[64:], rtol=0, atol=0)
    with pytest.raises(ValueError, match="batch of 3"):
        IndexedNoise(3, 0, 2).randn_like(torch.empty(3, 2))


def test_randn_like_without_and_with_a_generator():
    from physdiff.samplers import randn_like

    x = torch.empty(5, 3, dtype=torch.float64)
    assert randn_like(x).shape == (5, 3) and randn_like(x).dtype == torch.float64
    a = randn_like(x, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64))


def test_registered_sampler_receives_every_argument():
    """register() adds a SamplerSpec with what it was given; run_sampler validates the options and
    hands the sampler every argument it got, by identity."""
    from physdiff.samplers import SAMPLERS, SamplerResult, register, run_sampler

    seen = {}

    def probe(model, sched, x_T, **kwargs):
        seen.update(kwargs, model=model, sched=sched, x_T=x_T)
        return SamplerResult(x_T, 1)

    register("probe-sampler", "a test sampler", {"steps": "K"}, default_steps=3)(probe)
    try:
        spec = SAMPLERS["probe-sampler"]
        assert (spec.name, spec.fn, spec.summary, spec.options, spec.default_steps) == \
            ("probe-sampler", probe, "a test sampler", {"steps": "K"}, 3)
        sched = make_schedule("linear", 10)
        model, x_T, cond, gen = object(), torch.zeros(2, 2), torch.tensor([0, 1]), torch.Generator()

        def cb(i, t, x):
            return None

        run_sampler("probe-sampler", model, sched, x_T, prediction="v", variance="beta_tilde", clip_x0=2.5,
                    cond=cond, generator=gen, callback=cb)
        assert seen["model"] is model and seen["sched"] is sched and seen["x_T"] is x_T
        assert (seen["prediction"], seen["variance"], seen["clip_x0"]) == ("v", "beta_tilde", 2.5)
        assert seen["cond"] is cond and seen["generator"] is gen and seen["callback"] is cb
        assert seen["steps"] == 3  # the default, capped at T
        run_sampler("probe-sampler", model, sched, x_T, steps=7)
        assert seen["steps"] == 7  # a given step count is kept
    finally:
        del SAMPLERS["probe-sampler"]

    register("bare-sampler", "no options", {})(probe)
    try:
        with pytest.raises(Exception, match=r"takes no option 'steps'; its options: none$"):
            run_sampler("bare-sampler", object(), make_schedule("linear", 10), torch.zeros(1, 2), steps=2)
    finally:
        del SAMPLERS["bare-sampler"]
    with pytest.raises(Exception, match=r"its options: steps, spacing, timesteps, eta$"):
        run_sampler("ddim", object(), make_schedule("linear", 10), torch.zeros(1, 2), bogus=1)


@pytest.mark.parametrize("sampler,options,error", [
    ("ddim", {"steps": 1}, None), ("ddim", {"steps": 10}, None), ("ddim", {"steps": 0}, "out of range"),
    ("ddim", {"steps": 11}, "out of range"), ("ddim", {"steps": 2.0}, "out of range"), ("ddim", {"eta": 0.0}, None),
    ("ddim", {"eta": 1.0}, None), ("ddim", {"eta": -0.01}, "out of range"), ("ddim", {"eta": 1.01}, "out of range"),
    ("ddim", {"spacing": "quadratic"}, None), ("ddim", {"spacing": "square"}, "unknown spacing"),
    ("ode", {"method": "dopri5"}, None), ("ode", {"method": "rk45"}, "unknown ODE method"),
    ("ode", {"rtol": 1e-3}, None), ("ode", {"rtol": 2.0}, None), ("ode", {"rtol": 0.0}, "must be > 0"),
    ("ode", {"atol": 1e-9}, None), ("ode", {"atol": -1e-9}, "must be > 0"),
])
def test_option_ranges(sampler, options, error):
    """Options at the edges of their ranges (T = 10): accepted as given, or one PhysdiffError saying why."""
    from physdiff.errors import PhysdiffError
    from physdiff.samplers import check_options

    if error is None:
        assert check_options(sampler, options, 10) == options
    else:
        with pytest.raises(PhysdiffError, match=error):
            check_options(sampler, options, 10)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_respaced_loop_reports_paper_steps_and_passes_labels(sampler):
    """callback(i, t, x): after the network call at index τ_k the new state is x at paper step
    τ_{k-1} + 1 (0 after the last call), t the index the network saw; labels reach every call."""
    from physdiff.samplers import run_sampler

    sched = make_schedule("linear", 100)
    calls, labels = [], []

    def model(x, t, cond):
        labels.append(cond)
        return torch.zeros_like(x)

    def cb(i, t, x):
        calls.append((i, int(t[0])))

    cond = torch.tensor([1, 2, 3])
    run_sampler(sampler, model, sched, torch.zeros(3, 2), steps=4, cond=cond,
                generator=torch.Generator().manual_seed(0), callback=cb)
    assert calls == [(67, 99), (34, 66), (1, 33), (0, 0)]  # τ = 0, 33, 66, 99
    assert len(labels) == 4 and all(c is cond for c in labels)


def test_trajectory_forwards_the_user_callback(gaussian_2d):
    sched = make_schedule("linear", 10)
    seen = []
    _, traj = sample_with_trajectory(ddpm_sample, OptimalEpsilon(gaussian_2d, sched), sched, torch.zeros(4, 2),
                                       generator=torch.Generator().manual_seed(1),
                                       callback=lambda i, t, x: seen.append((i, int(t[0]), x)))
    assert [s[:2] for s in seen] == [(i, i) for i in range(9, -1, -1)]  # every index: step i is x_i
    assert all(torch.equal(s[2], traj[j]) for j, s in enumerate(seen))


def test_guidance_combines_conditional_and_unconditional_outputs():
    """(1 + w) f(x, t, c) − w f(x, t, ∅), evaluated as one doubled batch; w = 0 or no labels: f."""
    from physdiff.samplers import GuidedModel

    def f(x, t, cond):
        shift = 0.0 if cond is None else cond[:, None].to(x.dtype)
        return x * t[:, None].to(x.dtype) + shift

    x, t, c = torch.ones(3, 2), torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2])
    null = 10
    for w in (0.0, 1.0, 2.5):
        g = GuidedModel(f, w, null)
        want = (1 + w) * f(x, t, c) - w * f(x, t, torch.full_like(c, null))
        torch.testing.assert_close(g(x, t, c), want)
    torch.testing.assert_close(GuidedModel(f, 2.0, null)(x, t, None), f(x, t, None))

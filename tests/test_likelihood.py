"""Likelihoods against the exact Gaussian log-density, with the optimal denoiser."""

import math

import numpy as np
import pytest
import torch

from conftest import as_prediction
from physdiff.analytic import GaussianMixture, OptimalEpsilon
from physdiff.likelihood import (
    discretized_gaussian_log_likelihood,
    gaussian_kl,
    nats_to_bits_per_dim,
    ode_log_likelihood,
    variational_bound,
)
from physdiff.schedule import make_schedule


@pytest.fixture(scope="module")
def data(request):
    mix = GaussianMixture([[1.0, -0.5]], [[[1.0, 0.6], [0.6, 0.5]]])
    x0 = torch.from_numpy(mix.sample(300, np.random.default_rng(1)))
    return mix, x0


def test_gaussian_kl_matches_torch():
    m1, m2 = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    v1, v2 = torch.tensor(0.3, dtype=torch.float64), torch.tensor(1.7, dtype=torch.float64)
    p = torch.distributions.Normal(m1, v1.sqrt())
    q = torch.distributions.Normal(m2, v2.sqrt())
    torch.testing.assert_close(gaussian_kl(m1, v1, m2, v2), torch.distributions.kl_divergence(p, q).sum(1))


@pytest.mark.parametrize("mean", [-0.95, 0.1, 0.95])
def test_discretized_decoder_is_a_distribution_over_bins(mean):
    """The 256 bins' probabilities sum to 1: the edge bins take the tails. With the mean near an
    edge the tail is large, so an edge bin that stops at its own bin boundary fails it."""
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)[:, None]
    logp = discretized_gaussian_log_likelihood(bins, torch.full_like(bins, mean), torch.tensor(0.04))
    assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ode_likelihood_equals_exact_density(data, name):
    mix, x0 = data
    sched = make_schedule(name, 1000)
    res = ode_log_likelihood(OptimalEpsilon(mix, sched), sched, x0)
    exact = mix.log_prob(x0)
    assert res["estimator"] == "exact" and res["nfe"] > 0
    rel = float((res["log_prob"].mean() - exact.mean()).abs() / exact.mean().abs())
    assert rel < 0.01
    assert float((res["log_prob"] - exact).abs().max()) < 0.05


def test_hutchinson_estimator_agrees(data):
    mix, x0 = data
    sched = make_schedule("linear", 1000)
    res = ode_log_likelihood(OptimalEpsilon(mix, sched), sched, x0, exact_divergence=False, probes=4)
    assert res["estimator"] == "hutchinson(4)"
    exact = mix.log_prob(x0)
    # unbiased per point; the mean over 300 points agrees within a few % of the entropy
    assert float((res["log_prob"].mean() - exact.mean()).abs()) < 0.03 * float(exact.mean().abs())


def test_ode_likelihood_in_data_units(data):
    """Standardising by a scale s adds log|∂z/∂x| = -Σ log s: the result is the data density."""
    mix, x0 = data
    scale = torch.tensor([3.0, 0.5], dtype=torch.float64)  # Σ log s = 0.41: a dropped or flipped Jacobian shows
    z = x0 / scale
    mix_z = GaussianMixture(mix.means / scale, mix.covs / torch.outer(scale, scale))
    sched = make_schedule("linear", 1000)
    jac = -float(scale.log().sum())
    res = ode_log_likelihood(OptimalEpsilon(mix_z, sched), sched, z, log_det_jacobian=jac)
    assert float((res["log_prob"].mean() - mix.log_prob(x0).mean()).abs()) < 0.01 * float(mix.log_prob(x0).mean().abs())
    # the bound in data units lies above the exact −log p_x and is tight (a flipped Jacobian: 0.8 nats off)
    vb = variational_bound(OptimalEpsilon(mix_z, sched), sched, z, log_det_jacobian=jac,
                           generator=torch.Generator().manual_seed(0))
    gap = float((vb["total"] + mix.log_prob(x0)).mean())
    assert -0.05 < gap < 0.15, gap


def test_variational_bound_above_exact_and_tightens_with_T(data):
    mix, _ = data
    x0 = torch.from_numpy(mix.sample(3000, np.random.default_rng(5)))
    exact = -mix.log_prob(x0)
    exact_nll = float(exact.mean())
    bounds, gap_se = {}, {}
    for T in (10, 1000):
        sched = make_schedule("linear", T)
        vb = variational_bound(OptimalEpsilon(mix, sched), sched, x0, generator=torch.Generator().manual_seed(0))
        assert set(vb) == {"prior", "diffusion", "decoder", "total"}
        torch.testing.assert_close(vb["total"], vb["prior"] + vb["diffusion"] + vb["decoder"])
        assert float(vb["prior"].max()) < 1e-3  # x_T is noise: the prior term is negligible
        bounds[T] = float(vb["total"].mean())
        gap_se[T] = float((vb["total"] - exact).std() / len(x0) ** 0.5)  # Monte Carlo error of the gap
    assert bounds[1000] > exact_nll - 3 * gap_se[1000]
    assert bounds[10] > bounds[1000] + 3 * gap_se[10]
    assert bounds[1000] - exact_nll < 0.1  # tight at T = 1000


def test_bits_per_dim():
    assert nats_to_bits_per_dim(2 * math.log(2), 2) == pytest.approx(1.0)


def test_ode_likelihood_passes_its_arguments_to_the_flow():
    """Labels, the parametrisation, the solver, its tolerances and Hutchinson's seed all reach
    ode.log_likelihood: each changes the answer the way it should."""
    sched = make_schedule("linear", 1000)
    mixes = [GaussianMixture([np.full(2, m)], [np.array([[0.3, 0.1], [0.1, 0.2]])]) for m in (-1.0, 2.0)]
    exact = [OptimalEpsilon(m, sched) for m in mixes]
    x = torch.from_numpy(mixes[1].sample(20, np.random.default_rng(0)))
    cond = torch.ones(20, dtype=torch.long)

    def conditional(z, t, c):
        return torch.where(c[:, None] == 1, exact[1](z, t), exact[0](z, t))

    res = ode_log_likelihood(conditional, sched, x, cond=cond)
    assert float((res["log_prob"] - mixes[1].log_prob(x)).abs().max()) < 0.05  # the label-1 law, not label 0

    v = ode_log_likelihood(as_prediction(exact[1], sched, "v"), sched, x, prediction="v")  # the same flow
    assert float((v["log_prob"] - mixes[1].log_prob(x)).abs().max()) < 0.05
    loose = ode_log_likelihood(exact[1], sched, x, method="dopri5", rtol=1e-2, atol=1e-2)
    tight = ode_log_likelihood(exact[1], sched, x, method="dopri5", rtol=1e-7, atol=1e-7)
    assert loose["nfe"] < tight["nfe"]
    assert ode_log_likelihood(exact[1], sched, x, steps=3)["nfe"] == 12
    h = [ode_log_likelihood(conditional, sched, x, cond=cond, exact_divergence=False, seed=s, steps=3)["log_prob"]
         for s in (0, 0, 1)]  # a non-diagonal Jacobian: the probes matter
    assert torch.equal(h[0], h[1]) and not torch.equal(h[0], h[2])


def test_ode_likelihood_is_exact_up_to_the_limit_dimension():
    from physdiff import ode

    sched = make_schedule("linear", 10)

    def model(z, t, c=None):
        return torch.tanh(z)

    for D, want in ((ode.EXACT_MAX_DIM, "exact"), (ode.EXACT_MAX_DIM + 1, "hutchinson(1)")):
        x = torch.zeros(1, D, dtype=torch.float64)
        assert ode_log_likelihood(model, sched, x, steps=1)["estimator"] == want
    img = torch.zeros(1, 4, 8, 8)  # D = 256 as channels × pixels
    assert ode_log_likelihood(model, sched, img, steps=1)["estimator"] == "exact"


def test_ode_likelihood_tolerances_each_reach_the_adaptive_solver(data):
    """dopri5 at its default tolerances matches the exact density; loosening rtol alone or atol
    alone takes fewer evaluations."""
    mix, x0 = data
    sched = make_schedule("linear", 1000)
    model = OptimalEpsilon(mix, sched)
    x = x0[:20]
    res = ode_log_likelihood(model, sched, x, method="dopri5")
    assert float((res["log_prob"] - mix.log_prob(x)).abs().max()) < 0.02
    nfe = {k: ode_log_likelihood(model, sched, x, method="dopri5", **kw)["nfe"] for k, kw in {
        "tight": {"rtol": 1e-8, "atol": 1e-8}, "rtol": {"rtol": 1e-2, "atol": 1e-8},
        "atol": {"rtol": 1e-8, "atol": 1e-2}}.items()}
    assert nfe["rtol"] < nfe["tight"] and nfe["atol"] < nfe["tight"], nfe

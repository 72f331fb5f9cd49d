"""DDIM, DPM-Solver++ and the probability-flow ODE, driven by the exact ε of Gaussian data."""

import itertools
import math

import numpy as np
import pytest
import torch

from conftest import k_sigma
from physdiff.analytic import OptimalEpsilon
from physdiff.errors import PhysdiffError
from physdiff.samplers import CountingModel, ddim_invert, ddim_sample, ddpm_sample, dpm_solver_sample, ode_sample
from physdiff.schedule import SPACINGS, make_schedule, timestep_subsequence


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("K", [1, 5, 20, 1000])
def test_timestep_subsequences(spacing, K):
    sched = make_schedule("linear", 1000)
    taus = timestep_subsequence(1000, K, spacing, sched)
    assert len(taus) == K and taus == sorted(set(taus))
    assert 0 <= taus[0] and taus[-1] == 999
    if K == 1000:
        assert taus == list(range(1000))
    with pytest.raises(ValueError):
        timestep_subsequence(1000, 1001, spacing, sched)


def test_trailing_spacing_matches_lin_et_al():
    assert timestep_subsequence(1000, 10, "trailing") == [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]


def test_ddim_eta_one_equals_ddpm_with_beta_tilde(gaussian_2d):
    """On all timesteps, DDIM with η = 1 is ancestral DDPM with σ² = β̃, draw for draw."""
    sched = make_schedule("linear", 200)
    model = OptimalEpsilon(gaussian_2d, sched)
    x_T = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = ddpm_sample(model, sched, x_T, variance="beta_tilde", generator=torch.Generator().manual_seed(1)).samples
    b = ddim_sample(model, sched, x_T, eta=1.0, generator=torch.Generator().manual_seed(1)).samples
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def _law_check(x, mix, allowance):
    m, C = mix.means[0].numpy(), mix.covs[0].numpy()
    n = len(x)
    assert k_sigma(x.mean(0), m, np.sqrt(np.diag(C) / n) + allowance, k=4)
    se = np.sqrt((C**2 + np.outer(np.diag(C), np.diag(C))) / n)
    assert np.all(np.abs(np.cov(x, rowvar=False) - C) <= 4 * se + allowance)


@pytest.mark.parametrize("sampler,kw,nfe,allowance", [
    (ddim_sample, {"steps": 200}, 200, 0.02),
    (ddim_sample, {"steps": 100, "eta": 0.5}, 100, 0.02),
    (ddpm_sample, {"steps": 100}, 100, 0.02),
    (ddim_sample, {"steps": 100, "spacing": "logsnr"}, 100, 0.02),
    (ddpm_sample, {"steps": 100, "spacing": "logsnr"}, 100, 0.02),
    (dpm_solver_sample, {"steps": 20}, 20, 0.03),
    (dpm_solver_sample, {"steps": 50}, 50, 0.01),
])
def test_fast_samplers_reproduce_gaussian(gaussian_2d, sampler, kw, nfe, allowance):
    sched = make_schedule("linear", 1000)
    model = CountingModel(OptimalEpsilon(gaussian_2d, sched))
    g = torch.Generator().manual_seed(11)
    x_T = torch.randn(20_000, 2, generator=g, dtype=torch.float64)
    res = sampler(model, sched, x_T, generator=g, **kw)
    assert model.nfe == nfe == res.nfe
    _law_check(res.samples.numpy(), gaussian_2d, allowance)


def test_ode_sampler_reproduces_gaussian_and_counts_nfe(gaussian_2d):
    sched = make_schedule("cosine", 1000)
    counter = CountingModel(OptimalEpsilon(gaussian_2d, sched))
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    res = ode_sample(counter, sched, x_T)
    assert res.nfe == counter.nfe > 0 and res.log_prob is None
    _law_check(res.samples.numpy(), gaussian_2d, 0.01)


def test_dpm_solver_beats_ddim_at_equal_nfe(gaussian_2d):
    """Second order pays: at 10 NFE the covariance error of DPM-Solver++ is below DDIM's."""
    sched = make_schedule("linear", 1000)
    model = OptimalEpsilon(gaussian_2d, sched)
    x_T = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    C = gaussian_2d.covs[0].numpy()
    err = {name: np.abs(np.cov(f(model, sched, x_T, steps=10).samples.numpy(), rowvar=False) - C).max()
           for name, f in (("ddim", ddim_sample), ("dpm", dpm_solver_sample))}
    assert err["dpm"] < 0.5 * err["ddim"], err


def test_ddim_inversion_round_trip(gaussian_2d):
    sched = make_schedule("linear", 1000)
    model = OptimalEpsilon(gaussian_2d, sched)
    x0 = torch.from_numpy(gaussian_2d.sample(500, np.random.default_rng(0)))
    z = ddim_invert(model, sched, x0, steps=500)
    # the latents are standard normal (the ODE maps the data law to the prior): mean 0 and
    # covariance I, off-diagonal included (the data are correlated, ρ = 0.85) ...
    n = len(z)
    assert np.all(np.abs(z.mean(0).numpy()) < 4 / np.sqrt(n))
    assert np.all(np.abs(np.cov(z.numpy(), rowvar=False) - np.eye(2)) < 4 * np.sqrt(2 / n))
    back = ddim_sample(model, sched, z, steps=500).samples
    # ... and decoding them returns the data
    assert float((back - x0).abs().max()) < 0.05


def test_third_order_multistep_beats_second_at_20_and_30_nfe(gaussian_2d):
    """DPM-Solver++(3M) with the exact denoiser: the law of the output is right (4 standard errors
    plus its discretisation allowance), and its covariance error is below 2M's at 20 and 30 NFE
    (measured: 0.022 against 0.034, 0.011 against 0.018; below 15 NFE 3M is the worse one,
    benchmarks/README.md)."""
    sched = make_schedule("linear", 1000)
    model = CountingModel(OptimalEpsilon(gaussian_2d, sched))
    x_T = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    C = gaussian_2d.covs[0].numpy()
    for K in (20, 30):
        err = {order: np.abs(np.cov(dpm_solver_sample(model, sched, x_T, steps=K, order=order).samples.numpy(),
                                    rowvar=False) - C).max() for order in (2, 3)}
        assert err[3] < 0.8 * err[2], (K, err)
    model.nfe = 0
    res = dpm_solver_sample(model, sched, x_T, steps=30, order=3)
    assert res.nfe == model.nfe == 30
    _law_check(res.samples.numpy(), gaussian_2d, 0.015)


def _exact_data_prediction_step(m, lam_s, lam_t, x_s):
    """x at λ_t of the data-prediction ODE x_t = (σ_t/σ_s) x_s + σ_t ∫ e^λ m(λ) dλ (Lu et al. 2022,
    DPM-Solver++ eq. 9) for a data prediction m(λ) that does not depend on x, by quadrature."""
    from scipy.integrate import quad

    sigma = lambda lam: np.exp(-lam) / np.sqrt(1 + np.exp(-2 * lam))  # noqa: E731
    integral, _ = quad(lambda lam: np.exp(lam) * m(lam), lam_s, lam_t, epsabs=1e-13, epsrel=1e-13)
    return sigma(lam_t) / sigma(lam_s) * x_s + sigma(lam_t) * integral


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("which,order,degree", [("predictor", 3, 2), ("corrector", 2, 2), ("corrector", 3, 3)])
def test_unipc_update_is_exact_for_polynomial_data_predictions(which, order, degree, variant):
    """UniPC's coefficients solve R ρ = b, the Taylor conditions of the exponential integrator
    (Zhao et al. 2023, Thm. 3.1): a step that uses k conditions is exact when the data prediction
    is a polynomial of degree k in λ. On unequal steps, a wrong r_k, sign, factorial or B(h) breaks it."""
    from physdiff.samplers import _unipc_update

    rng = np.random.default_rng(degree + order)
    coef = rng.normal(size=degree + 1)
    m = lambda lam: float(np.polyval(coef, lam))  # noqa: E731
    lam_s2, lam_s1, lam_s0, lam_t = -1.3, -0.9, -0.2, 0.55  # unequal steps, increasing λ (less noise)
    alpha = lambda lam: 1 / np.sqrt(1 + np.exp(-2 * lam))  # noqa: E731
    sigma = lambda lam: alpha(lam) * np.exp(-lam)  # noqa: E731
    x_s0 = torch.tensor(0.37, dtype=torch.float64)
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    kw = dict(alpha_t=alpha(lam_t), sigma_ratio=sigma(lam_t) / sigma(lam_s0), order=order, variant=variant)
    earlier, lam_earlier = [t(m(lam_s1)), t(m(lam_s2))], [lam_s1, lam_s2]
    m_t = t(m(lam_t)) if which == "corrector" else None
    got = float(_unipc_update(x_s0, t(m(lam_s0)), earlier, lam_s0, lam_t, lam_earlier, m_t=m_t, **kw))
    want = _exact_data_prediction_step(m, lam_s0, lam_t, 0.37)
    assert abs(got - want) < 1e-10, (got, want)
    # one degree more is not integrated exactly: the test can fail
    coef2 = np.concatenate([rng.normal(size=1), coef])
    m2 = lambda lam: float(np.polyval(coef2, lam))  # noqa: E731
    earlier2 = [t(m2(lam_s1)), t(m2(lam_s2))]
    m2_t = t(m2(lam_t)) if which == "corrector" else None
    got2 = float(_unipc_update(x_s0, t(m2(lam_s0)), earlier2, lam_s0, lam_t, lam_earlier, m_t=m2_t, **kw))
    assert abs(got2 - _exact_data_prediction_step(m2, lam_s0, lam_t, 0.37)) > 1e-6


def test_dpm_solver_3m_step_on_unequal_steps():
    """A DPM-Solver++(3M) step against quadrature of the exact step, on unequal steps (so that a
    swapped r0/r1 or h0/h1 shows): the default (taylor) is exact for x̂₀ quadratic in λ and not
    for a cubic; the reference coefficient (the authors' code, diffusers, k-diffusion) is exact for
    a linear x̂₀ only, and on a quadratic it misses half of the D2 term."""
    from physdiff.samplers import _dpm_update

    lam_s2, lam_s1, lam_s0, lam_t = -1.4, -1.15, -0.35, 0.5  # steps 0.25, 0.8, 0.85
    alpha = lambda lam: 1 / np.sqrt(1 + np.exp(-2 * lam))  # noqa: E731
    sigma = lambda lam: alpha(lam) * np.exp(-lam)  # noqa: E731
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731

    def error(coef, variant):
        m = lambda lam: float(np.polyval(coef, lam))  # noqa: E731
        hist = [(t(m(lam_s2)), lam_s1 - lam_s2), (t(m(lam_s1)), lam_s0 - lam_s1)]  # (x̂₀, the step from its point)
        got = float(_dpm_update(t(0.37), t(m(lam_s0)), hist, lam_t - lam_s0, alpha(lam_t),
                                sigma(lam_t) / sigma(lam_s0), 3, variant))
        return got - _exact_data_prediction_step(m, lam_s0, lam_t, 0.37)

    rng = np.random.default_rng(3)
    linear, quadratic, cubic = rng.normal(size=2), rng.normal(size=3), rng.normal(size=4)
    for variant in ("taylor", "reference"):
        assert abs(error(linear, variant)) < 1e-10
    assert abs(error(quadratic, "taylor")) < 1e-10 and abs(error(cubic, "taylor")) > 1e-5
    # the reference step on the quadratic: off by half the D2 term (for x̂₀ = λ² the exact m'' = 2)
    h = lam_t - lam_s0
    half_d2 = 0.5 * alpha(lam_t) * (h**2 - 2 * h - 2 * np.expm1(-h)) * quadratic[0]
    assert error(quadratic, "reference") == pytest.approx(-half_d2, rel=1e-8)
    assert abs(half_d2) > 1e-3
    from physdiff.samplers import check_options

    with pytest.raises(PhysdiffError, match="unknown dpm-solver variant"):
        check_options("dpm-solver", {"variant": "bh1"}, 1000)


def test_unipc_second_order_predictor_is_dpm_solver_2m_and_the_corrector_pays(gaussian_2d):
    """UniP-2 with bh2 (ρ = ½) is DPM-Solver++(2M); UniPC-3 (the corrector raising each step's
    order) has a covariance error below 2M's at 10 and 20 NFE with the exact denoiser (measured:
    0.043 against 0.084 and 0.010 against 0.039); its law is right to 4 standard errors plus its
    discretisation allowance at 20 NFE, in 20 network evaluations."""
    from physdiff.samplers import _unipc_update

    x, m0, m1 = (torch.randn(5, 2, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (1, 2, 3))
    lam_s1, lam_s0, lam_t, alpha_t, ratio = -1.0, -0.4, 0.3, 0.8, 0.6
    h, h0 = lam_t - lam_s0, lam_s0 - lam_s1
    dpm = ratio * x - alpha_t * math.expm1(-h) * m0 - 0.5 * alpha_t * math.expm1(-h) * (m0 - m1) / (h0 / h)
    uni = _unipc_update(x, m0, [m1], lam_s0, lam_t, [lam_s1], alpha_t, ratio, 2, "bh2")
    torch.testing.assert_close(uni, dpm, rtol=1e-12, atol=1e-12)

    from physdiff.samplers import unipc_sample

    sched = make_schedule("linear", 1000)
    model = CountingModel(OptimalEpsilon(gaussian_2d, sched))
    x_T = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    C = gaussian_2d.covs[0].numpy()
    for K in (10, 20):
        err = {name: np.abs(np.cov(f(model, sched, x_T, steps=K, order=o).samples.numpy(), rowvar=False) - C).max()
               for name, f, o in (("2M", dpm_solver_sample, 2), ("unipc-3", unipc_sample, 3))}
        assert err["unipc-3"] < 0.6 * err["2M"], (K, err)
    model.nfe = 0
    res = unipc_sample(model, sched, x_T, steps=20, order=3)
    assert res.nfe == model.nfe == 20
    _law_check(res.samples.numpy(), gaussian_2d, 0.012)


def test_karras_spacing_is_uniform_in_sigma_to_the_one_seventh():
    """Karras et al. 2022 eq. 5: σ_i^{1/ρ} (σ = √((1-ᾱ)/ᾱ), ρ = 7) equally spaced between the ends."""
    from physdiff.schedule import log_sigma_bar

    sched = make_schedule("linear", 1000)
    taus = timestep_subsequence(1000, 12, "karras", sched)
    s = np.exp(log_sigma_bar(sched)[taus] / 7)
    step = np.diff(s)
    assert taus[0] == 0 and taus[-1] == 999
    assert np.all(np.abs(step / step.mean() - 1) < 0.05), step  # equal up to rounding to integer indices
    assert taus != timestep_subsequence(1000, 12, "logsnr", sched)


@pytest.mark.parametrize("spacing", ["uniform", "logsnr"])
def test_sde_dpm_solver_first_order_is_ddim_eta_one_draw_for_draw(gaussian_2d, spacing):
    """SDE-DPM-Solver++(1) is DDIM with η = 1 on the same visited steps (Lu et al. 2022): the same
    mean, the same noise scale σ_t √(1 − e^{−2h}) = σ_η, the same draws."""
    from physdiff.samplers import sde_dpm_solver_sample

    sched = make_schedule("linear", 1000)
    model = OptimalEpsilon(gaussian_2d, sched)
    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = sde_dpm_solver_sample(model, sched, x_T, steps=25, spacing=spacing, order=1,
                              generator=torch.Generator().manual_seed(5)).samples
    b = ddim_sample(model, sched, x_T, steps=25, spacing=spacing, eta=1.0,
                    generator=torch.Generator().manual_seed(5)).samples
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_sde_dpm_solver_second_order_reproduces_gaussian_and_beats_first(gaussian_2d):
    """SDE-DPM-Solver++(2M) with the exact denoiser: the law of the output at 50 NFE, and at 20 NFE a
    covariance error below the first-order (DDIM η = 1) one (measured: 0.068 against 0.371), NFE counted."""
    from physdiff.samplers import sde_dpm_solver_sample

    sched = make_schedule("linear", 1000)
    model = CountingModel(OptimalEpsilon(gaussian_2d, sched))
    x_T = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    C = gaussian_2d.covs[0].numpy()
    err = {o: np.abs(np.cov(sde_dpm_solver_sample(model, sched, x_T, steps=20, order=o,
                                                  generator=torch.Generator().manual_seed(6)).samples.numpy(),
                            rowvar=False) - C).max() for o in (1, 2)}
    assert err[2] < 0.5 * err[1], err
    model.nfe = 0
    res = sde_dpm_solver_sample(model, sched, x_T, steps=50, generator=torch.Generator().manual_seed(7))
    assert res.nfe == model.nfe == 50
    _law_check(res.samples.numpy(), gaussian_2d, 0.02)


def test_unipc_default_order_is_third_from_15_steps(gaussian_2d):
    """The measured rule (benchmarks/README.md): third order from 15 steps, second below."""
    from physdiff.samplers import UNIPC_THIRD_ORDER_FROM, unipc_sample

    assert UNIPC_THIRD_ORDER_FROM == 15
    sched = make_schedule("linear", 1000)
    model = OptimalEpsilon(gaussian_2d, sched)
    x_T = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for steps, order in ((20, 3), (15, 3), (14, 2), (10, 2)):
        same = unipc_sample(model, sched, x_T, steps=steps).samples
        torch.testing.assert_close(same, unipc_sample(model, sched, x_T, steps=steps, order=order).samples)
        other = unipc_sample(model, sched, x_T, steps=steps, order=5 - order).samples
        assert not torch.allclose(same, other)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_fixed_coefficient_steps_by_hand(variant):
    """The two UniPC steps whose ρ is fixed at ½ rather than solved (where B(h) does not cancel): the
    second-order predictor and the first-order corrector, against the formulas written out, with
    B(h) = −h (bh1, data prediction) or e^{−h} − 1 (bh2) and unequal steps."""
    from physdiff.samplers import _unipc_update

    x, m0, m1, mt = (torch.randn(4, 2, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                     for s in (1, 2, 3, 4))
    lam_s1, lam_s0, lam_t, alpha_t, ratio = -1.1, -0.3, 0.5, 0.8, 0.6
    h = lam_t - lam_s0
    B = -h if variant == "bh1" else math.expm1(-h)
    base = ratio * x - alpha_t * math.expm1(-h) * m0
    r1 = (lam_s1 - lam_s0) / h
    want_p = base - alpha_t * B * 0.5 * (m1 - m0) / r1
    got_p = _unipc_update(x, m0, [m1], lam_s0, lam_t, [lam_s1], alpha_t, ratio, 2, variant)
    torch.testing.assert_close(got_p, want_p, rtol=1e-12, atol=1e-12)
    want_c = base - alpha_t * B * 0.5 * (mt - m0)
    got_c = _unipc_update(x, m0, [], lam_s0, lam_t, [], alpha_t, ratio, 1, variant, m_t=mt)
    torch.testing.assert_close(got_c, want_c, rtol=1e-12, atol=1e-12)


def test_unipc_trajectory_converges_one_order_above_its_predictor():
    """A denoiser whose data prediction is a cubic in λ (independent of x): the probability-flow ODE is
    solved by quadrature, x(λ) = (σ(λ)/σ(λ_T)) x_T + σ(λ) ∫ e^λ' x̂₀(λ') dλ'. Along the whole trajectory
    (states up to λ = 2) UniPC-2 on 40 steps stays within 6e-4 of it (measured 3.4e-4; with its corrector
    one order lower, 1.3e-3) and UniPC-1 (DDIM + corrector) does not (6e-3)."""
    from scipy.integrate import quad

    from physdiff.samplers import unipc_sample
    from physdiff.schedule import log_sigma_bar

    sched = make_schedule("linear", 1000)
    lam = -log_sigma_bar(sched)
    coef = [0.01, -0.05, 0.2, 0.3]

    def model(x, t, cond=None):
        return torch.as_tensor(np.polyval(coef, lam[t.numpy()]), dtype=x.dtype).reshape(-1, 1).expand_as(x)

    def sigma(v):
        return math.exp(-v) / math.sqrt(1 + math.exp(-2 * v))

    def exact(v):
        integral, _ = quad(lambda u: math.exp(u) * np.polyval(coef, u), lam[999], v, epsabs=1e-12, epsrel=1e-12)
        return sigma(v) / sigma(lam[999]) * 0.7 + sigma(v) * integral

    def worst(order):
        seen = {}
        unipc_sample(model, sched, torch.full((1, 1), 0.7, dtype=torch.float64), steps=40, order=order,
                     prediction="x0", callback=lambda i, t, x: seen.__setitem__(i, float(x)))
        return max(abs(x - exact(lam[i - 1])) for i, x in seen.items() if i > 0 and lam[i - 1] <= 2.0)

    assert worst(2) < 6e-4
    assert worst(1) > 3e-3


def test_sde_dpm_solver_second_order_step_by_hand():
    """Two steps of SDE-DPM-Solver++(2M) on unequal λ steps (quadratic spacing), the second with the
    history term D1 = (m0 − m1)/r0, r0 = h_prev/h, against the formula and the same noise draws."""
    from physdiff.samplers import randn_like, sde_dpm_solver_sample
    from physdiff.schedule import log_sigma_bar

    sched = make_schedule("linear", 100)
    lam = -log_sigma_bar(sched)
    ab = sched.alpha_bar.double().numpy()

    def model(x, t, cond=None):  # x̂₀ depends on x and t: not a constant the history could hide
        return torch.sin(x) + 0.1 * t.double().reshape(-1, 1)

    taus = timestep_subsequence(100, 4, "quadratic", sched)[::-1]
    x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    states = {}
    sde_dpm_solver_sample(model, sched, x_T, steps=4, spacing="quadratic", prediction="x0",
                          generator=torch.Generator().manual_seed(9),
                          callback=lambda i, t, x: states.__setitem__(i - 1, x.clone()))
    g = torch.Generator().manual_seed(9)
    x, prev = x_T, None
    for s, t in list(itertools.pairwise(taus))[:2]:
        m = model(x, torch.full((3,), s))
        h = lam[t] - lam[s]
        d = m if prev is None else m + 0.5 * (m - prev[0]) / (prev[1] / h)
        a_t, s_t, s_s = math.sqrt(ab[t]), math.sqrt(1 - ab[t]), math.sqrt(1 - ab[s])
        x = s_t / s_s * math.exp(-h) * x + a_t * (1 - math.exp(-2 * h)) * d \
            + s_t * math.sqrt(1 - math.exp(-2 * h)) * randn_like(x, g)
        prev = (m, h)
    h1, h2 = lam[taus[1]] - lam[taus[0]], lam[taus[2]] - lam[taus[1]]
    assert abs(h1 / h2 - 1) > 0.2  # unequal steps: r0 and 1/r0 differ
    torch.testing.assert_close(states[taus[2]], x, rtol=1e-6, atol=1e-6)

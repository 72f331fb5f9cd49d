"""The probability-flow ODE in torch: exact divergence, samples with their exact log-density,
likelihood, against Gaussian closed forms (exact denoiser, no training)."""

import numpy as np
import pytest
import torch

from conftest import as_prediction
from physdiff import ode
from physdiff.analytic import GaussianMixture, OptimalEpsilon
from physdiff.errors import PhysdiffError
from physdiff.samplers import SAMPLERS, check_options, run_sampler
from physdiff.schedule import make_schedule


def _gaussian(D, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(D, D)) / np.sqrt(D)
    return GaussianMixture([rng.normal(size=D)], [A @ A.T + 0.3 * np.eye(D)])


def test_exact_divergence_is_the_jacobian_trace():
    """On a nonlinear map with a known Jacobian: f(x) = tanh(W x) + x², tr J = Σ_i (1 - tanh²)_i W_ii + 2 x_i."""
    W = torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def fn(z):
        return torch.tanh(z @ W.T) + z**2

    out, tr = ode.exact_divergence(fn, x)
    want = ((1 - torch.tanh(x @ W.T) ** 2) * torch.diagonal(W)).sum(1) + 2 * x.sum(1)
    torch.testing.assert_close(tr, want)
    torch.testing.assert_close(out, fn(x))


@pytest.mark.parametrize("D", [2, 64])
def test_sample_with_log_prob_is_the_exact_density(D):
    """The ODE pushes N(0, I) at index T-1 forward with the exact flow of the data law, so the
    log-density of the samples is, by change of variables,
    log q(x₀) = log p₀(x₀) + log N(x_T; 0, I) − log p_T(x_T), every term known in closed form.
    Required: 1e-3 nats per dimension (the accuracy this gives: ~1e-5)."""
    mix, sched = _gaussian(D), make_schedule("linear", 1000)
    model = OptimalEpsilon(mix, sched)
    x_T = torch.randn(64, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    res = ode.sample_with_log_prob(model, sched, x_T)
    p0, pT = mix.noised(float(sched.alpha_bar[0])), mix.noised(float(sched.alpha_bar[-1]))
    exact = p0.log_prob(res.x) + ode.standard_normal_log_prob(x_T) - pT.log_prob(x_T)
    assert float((res.log_prob - exact).abs().max()) / D < 1e-3
    # a wrong sign of the divergence term or a dropped prior would be off by O(1) per dimension
    assert res.divergence == "exact" and res.nfe > 0


def test_likelihood_inverts_sampling():
    """Encoding the samples returns their latents and the same log-density (same flow, both ways)."""
    mix, sched = _gaussian(3, seed=1), make_schedule("cosine", 500)
    model = OptimalEpsilon(mix, sched)
    x_T = torch.randn(50, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    fwd = ode.sample_with_log_prob(model, sched, x_T)
    back = ode.log_likelihood(model, sched, fwd.x)
    torch.testing.assert_close(back.x, x_T, atol=2e-3, rtol=0)
    torch.testing.assert_close(back.log_prob, fwd.log_prob, atol=2e-3, rtol=0)


def test_hutchinson_is_unbiased_but_exact_is_default():
    mix, sched = _gaussian(4, seed=2), make_schedule("linear", 1000)
    model = OptimalEpsilon(mix, sched)
    x0 = torch.from_numpy(mix.sample(400, np.random.default_rng(0)))
    exact = ode.log_likelihood(model, sched, x0)
    hutch = ode.log_likelihood(model, sched, x0, divergence="hutchinson", probes=2)
    assert exact.divergence == "exact" and hutch.divergence == "hutchinson(2)"
    diff = (hutch.log_prob - exact.log_prob).numpy()
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(len(diff)) + 1e-3  # unbiased
    assert diff.std() > 1e-4  # and noisy: not for acceptance ratios


def test_fixed_step_solver_converges_to_adaptive():
    mix, sched = _gaussian(2), make_schedule("linear", 1000)
    model = OptimalEpsilon(mix, sched)
    x_T = torch.randn(100, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ref = ode.integrate(model, sched, x_T, direction="sample", rtol=1e-7, atol=1e-7).x
    errs = [float((ode.integrate(model, sched, x_T, direction="sample", method="rk4", steps=k).x - ref).abs().max())
            for k in (10, 40)]
    assert errs[1] < errs[0] / 8 and errs[1] < 1e-3  # fourth order: 4× the steps, ~256× smaller error


def test_registry_contract_and_option_errors():
    mix, sched = _gaussian(2), make_schedule("linear", 50)
    model = OptimalEpsilon(mix, sched)
    x_T = torch.randn(10, 2, dtype=torch.float64)
    from physdiff.distill import Students

    for name, spec in SAMPLERS.items():
        # the distilled sampler runs a run's students on their grids, here the exact denoiser on 3 steps
        net = Students({3: model}, {3: [5, 20, 49]}, "test") if name == "distilled" else model
        res = run_sampler(name, net, sched, x_T, generator=torch.Generator().manual_seed(0))
        assert res.samples.shape == x_T.shape and res.nfe > 0, name
        assert spec.summary
    res = run_sampler("ode", model, sched, x_T, log_prob=True)
    assert res.log_prob.shape == (10,)
    with pytest.raises(PhysdiffError, match="takes no option 'eta'"):
        run_sampler("dpm-solver", model, sched, x_T, eta=0.5)
    with pytest.raises(PhysdiffError, match=r"unknown sampler 'ddmp'.*did you mean 'ddpm'"):
        run_sampler("ddmp", model, sched, x_T)
    with pytest.raises(PhysdiffError, match="out of range"):
        check_options("ddim", {"steps": 51}, 50)
    assert check_options("dpm-solver", {}, 5) == {"steps": 5}  # the default 20 is capped at T


def test_default_steps_follow_the_parametrisation():
    """v-prediction gets 12 RK4 steps (48 evaluations), eps and x0 18 (bench_ode.py)."""
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sched = make_schedule("linear", 100)
    model = OptimalEpsilon(_gaussian(2, seed=3), sched)
    assert ode.integrate(model, sched, x_T, direction="sample").nfe == 4 * 18
    assert ode.integrate(model, sched, x_T, direction="sample", prediction="v").nfe == 4 * 12
    assert ode.integrate(model, sched, x_T, direction="sample", steps=5).nfe == 20


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_every_parametrisation_gives_the_same_flow(prediction):
    """A network predicting x₀ or v is turned into ε̂ at the ODE's continuous time: fed the exact
    x₀ and v of the Gaussian (from the exact ε, Tweedie), the flow is the ε-flow."""
    mix, sched = _gaussian(2, seed=3), make_schedule("linear", 1000)
    eps_model = OptimalEpsilon(mix, sched)
    model = as_prediction(eps_model, sched, prediction)
    x_T = torch.randn(50, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    want = ode.sample_with_log_prob(eps_model, sched, x_T, steps=18)
    got = ode.sample_with_log_prob(model, sched, x_T, prediction=prediction, steps=18)
    torch.testing.assert_close(got.x, want.x, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.log_prob, want.log_prob, atol=1e-6, rtol=0)


def test_labels_reach_the_network_and_evaluations_are_counted():
    """A conditional model's labels are passed to every evaluation (a class-dependent mean comes
    out), and the NFE is exactly 4 per RK4 step, with or without the log-density."""
    sched = make_schedule("linear", 1000)
    mixes = [GaussianMixture([np.full(2, m)], [0.1 * np.eye(2)]) for m in (-2.0, 3.0)]
    exact = [OptimalEpsilon(m, sched) for m in mixes]

    def model(x, t, cond):
        return torch.where(cond[:, None] == 1, exact[1](x, t), exact[0](x, t))

    x_T = torch.randn(400, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    cond = torch.arange(400) % 2
    res = ode.integrate(model, sched, x_T, direction="sample", cond=cond, method="rk4", steps=7)
    means = [float(res.x[cond == c].mean()) for c in (0, 1)]
    assert abs(means[0] + 2.0) < 0.1 and abs(means[1] - 3.0) < 0.1
    assert res.nfe == 28
    with_lp = ode.sample_with_log_prob(model, sched, x_T, cond=cond, steps=7)
    assert with_lp.nfe == 28
    torch.testing.assert_close(with_lp.x, res.x)


def _zero_eps(x, t, cond=None):
    return torch.zeros_like(x)


@pytest.mark.parametrize("direction", ["sample", "encode"])
def test_zero_noise_prediction_rescales_by_the_exact_signal_ratio(direction):
    """With ε̂ = 0 the ODE is dx/du = -(1-ᾱ)x, solved by x/√ᾱ = const: the state moves from index
    T-1 to index 0 (or back) scaled by exactly √(ᾱ_end/ᾱ_start), and log q changes by -D log of
    that factor. Ending one index early (ᾱ_1 for ᾱ_0) is a relative error of ~6e-5, caught here."""
    sched = make_schedule("linear", 1000)
    ab = sched.alpha_bar
    x = torch.randn(1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # a batch of one
    start, end = (ab[-1], ab[0]) if direction == "sample" else (ab[0], ab[-1])
    scale = float((end / start).sqrt())
    res = ode.integrate(_zero_eps, sched, x, direction=direction, log_prob=True, steps=200,
                        log_prob_start=torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(res.x, scale * x, rtol=2e-6, atol=0)  # RK4 on 200 steps: ~2e-7
    torch.testing.assert_close(res.log_prob, torch.full((1,), -3 * np.log(scale), dtype=torch.float64),
                               rtol=2e-6, atol=0)
    assert res.nfe == 800 and res.divergence == "exact"  # 4 evaluations per RK4 step with the divergence too
    plain = ode.integrate(_zero_eps, sched, x, direction=direction, steps=200)
    assert plain.log_prob is None and plain.divergence == "none" and plain.nfe == 800
    # the standard normal density of a batch of one has the right dimension count
    torch.testing.assert_close(ode.standard_normal_log_prob(x),
                               -0.5 * (x**2).sum(1) - 1.5 * torch.log(torch.tensor(2 * np.pi, dtype=torch.float64)))


def test_drift_time_index_interpolates_log_sigma_bar_and_clamps():
    """t(u) is exactly k at the tabulated u_k, k + 1/2 half-way in u between u_k and u_{k+1} (in
    every interval, the last one too), and is clamped to [0, T-1] outside the table."""
    sched = make_schedule("cosine", 20)
    drift = ode.Drift(_zero_eps, sched, "eps")
    u = drift.u_table
    T = len(u)
    for k in range(T):
        assert float(drift.time_index(u[k])) == pytest.approx(k, abs=1e-12)
    for k in range(T - 1):
        assert float(drift.time_index((u[k] + u[k + 1]) / 2)) == pytest.approx(k + 0.5, abs=1e-12)
    assert float(drift.time_index(u[0] - 1.0)) == 0.0
    assert float(drift.time_index(u[-1] + 1.0)) == T - 1


def test_divergence_choice_at_the_exact_limit_and_hutchinson_reproducibility():
    """auto: exact up to and including EXACT_MAX_DIM dimensions, Hutchinson above; Hutchinson's
    probes come from ``seed`` alone (same seed, same estimate; the default is probe count 1, seed 0).
    For a drift with a diagonal Jacobian Rademacher probes are exact (v_i² = 1)."""
    sched = make_schedule("linear", 20)

    def diag_model(x, t, cond=None):  # ε̂ = tanh(x): Jacobian diagonal
        return torch.tanh(x)

    for D, want in ((ode.EXACT_MAX_DIM, "exact"), (ode.EXACT_MAX_DIM + 1, "hutchinson(1)")):
        x = torch.randn(1, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        res = ode.integrate(diag_model, sched, x, direction="encode", log_prob=True, steps=1)
        assert res.divergence == want
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = ode.integrate(diag_model, sched, x, direction="encode", log_prob=True, steps=3, divergence="exact")
    hutch = ode.integrate(diag_model, sched, x, direction="encode", log_prob=True, steps=3, divergence="hutchinson")
    torch.testing.assert_close(hutch.log_prob, exact.log_prob, rtol=1e-10, atol=1e-10)
    assert hutch.nfe == exact.nfe == 12

    def mixing_model(x, t, cond=None):  # a full Jacobian: Hutchinson is noisy
        return torch.tanh(x @ torch.ones(4, 4, dtype=x.dtype))

    runs = [ode.integrate(mixing_model, sched, x, direction="encode", log_prob=True, steps=3,
                          divergence="hutchinson", **kw).log_prob for kw in ({}, {"seed": 0}, {"seed": 1})]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])
    two = ode.integrate(mixing_model, sched, x, direction="encode", log_prob=True, steps=3,
                        divergence="hutchinson", probes=2)
    assert two.divergence == "hutchinson(2)"


def test_adaptive_solver_obeys_its_tolerances():
    """dopri5: the default tolerances (1e-5) reproduce the exact flow to ~1e-4, and a looser
    tolerance takes fewer evaluations (the tolerances reach the solver), with and without log q."""
    mix, sched = _gaussian(2, seed=4), make_schedule("linear", 1000)
    model = OptimalEpsilon(mix, sched)
    x_T = torch.randn(20, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = ode.integrate(model, sched, x_T, direction="sample", method="rk4", steps=400)
    default = ode.integrate(model, sched, x_T, direction="sample", method="dopri5")
    assert float((default.x - ref.x).abs().max()) < 1e-3
    for log_prob in (False, True):
        nfe = [ode.integrate(model, sched, x_T, direction="sample", method="dopri5", log_prob=log_prob,
                             rtol=tol, atol=atol).nfe for tol, atol in ((1e-2, 1e-8), (1e-8, 1e-8), (1e-8, 1e-2))]
        assert nfe[0] < nfe[1] and nfe[2] < nfe[1], nfe


def test_default_steps_of_an_unknown_parametrisation_is_the_largest():
    assert ode.default_steps("something-else") == max(ode.DEFAULT_STEPS.values())


def _error_cases():
    from physdiff import diffusion as dif
    from physdiff import samplers
    from physdiff.schedule import timestep_subsequence

    sched = make_schedule("linear", 10)
    x, t = torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)
    return [
        (lambda: make_schedule("quad", 10), ValueError, "unknown schedule 'quad'; allowed: linear, cosine, sigmoid"),
        (lambda: make_schedule("linear", 0), ValueError, "timesteps must be an integer >= 1, got 0"),
        (lambda: timestep_subsequence(10, 3, "even"), ValueError,
         "unknown spacing 'even'; allowed: uniform, quadratic, trailing, logsnr, karras"),
        (lambda: timestep_subsequence(10, 11), ValueError, "steps must be between 1 and T = 10, got 11"),
        (lambda: timestep_subsequence(10, 3, "logsnr"), ValueError, "logsnr spacing needs the schedule"),
        (lambda: dif.split_prediction(sched, x, x, t, "score"), ValueError,
         "unknown prediction 'score'; allowed: eps, x0, v"),
        (lambda: dif.target_for(sched, "score", x, t, x), ValueError,
         "unknown prediction 'score'; allowed: eps, x0, v"),
        (lambda: dif.reverse_variance_table(sched, "learned"), ValueError,
         "unknown variance 'learned'; allowed: beta, beta_tilde"),
        (lambda: dif.training_loss(sched, x, x, x, t, x, loss="l1"), ValueError,
         "unknown loss 'l1'; allowed: simple, mu"),
        (lambda: ode.integrate(_zero_eps, sched, x, direction="sample", method="rk45"), PhysdiffError,
         "unknown ODE method 'rk45'; allowed: rk4, dopri5, midpoint, euler"),
        (lambda: ode.integrate(_zero_eps, sched, x, direction="up"), PhysdiffError,
         "unknown direction 'up'; allowed: sample, encode"),
        (lambda: ode.integrate(_zero_eps, sched, x, direction="sample", divergence="trace"), PhysdiffError,
         "unknown divergence 'trace'; allowed: auto, exact, hutchinson"),
        (lambda: ode.integrate(_zero_eps, sched, x, direction="sample", steps=0), PhysdiffError,
         "steps = 0 is not allowed; allowed: an integer >= 1"),
        (lambda: ode.integrate(_zero_eps, sched, x, direction="encode", steps=2.5), PhysdiffError,
         "steps = 2.5 is not allowed; allowed: an integer >= 1"),
        (lambda: ode.Drift(_zero_eps, sched, "score").epsilon(torch.tensor(0.0), x), PhysdiffError,
         "unknown prediction 'score'; allowed: eps, x0, v"),
        (lambda: samplers.check_options("ddim", {"spacing": "even"}, 10), PhysdiffError,
         "unknown spacing 'even'; allowed: uniform, quadratic, trailing, logsnr, karras"),
        (lambda: samplers.check_options("ode", {"method": "rk45"}, 10), PhysdiffError,
         "unknown ODE method 'rk45'; allowed: rk4, dopri5, midpoint, euler"),
        (lambda: samplers.get_sampler("zzzzzz"), PhysdiffError,  # nothing close: no hint
         "unknown sampler 'zzzzzz'; allowed: ddpm, ddim, dpm-solver, sde-dpm-solver, unipc, ode, distilled"),
    ]


def test_library_errors_name_the_value_and_what_is_allowed():
    """Every error of the math modules says what was given and what is allowed, in one line."""
    import re

    for fn, kind, message in _error_cases():
        with pytest.raises(kind, match="^" + re.escape(message)) as err:
            fn()
        assert "\n" not in str(err.value)


def test_default_spacing_is_uniform_and_respaced_schedules_are_named():
    from physdiff.schedule import respace, timestep_subsequence

    assert timestep_subsequence(30, 4) == timestep_subsequence(30, 4, "uniform") == [0, 10, 19, 29]
    # distinct after rounding: the push-up must leave a dense uniform subsequence alone
    assert timestep_subsequence(30, 20) == [int(v) for v in np.round(np.linspace(0, 29, 20))]
    assert respace(make_schedule("linear", 100), [0, 5, 99]).name == "linear[3 of 100]"

import numpy as np
import pytest
import torch

from conftest import k_sigma
from physdiff import diffusion as dif
from physdiff.schedule import SCHEDULES, make_schedule


@pytest.fixture(scope="module")
def sched():
    return make_schedule("linear", 100)


def _t(i, n):
    return torch.full((n,), i, dtype=torch.long)


@pytest.mark.parametrize("i", [0, 10, 60, 99])
def test_q_sample_moments(sched, i):
    n = 200_000
    g = torch.Generator().manual_seed(i)
    x0 = torch.full((n, 1), 1.7, dtype=torch.float64)
    xt = dif.q_sample(sched, x0, _t(i, n), torch.randn(n, 1, generator=g, dtype=torch.float64))
    mean, var = float(sched.sqrt_alpha_bar[i]) * 1.7, 1 - float(sched.alpha_bar[i])
    assert k_sigma(xt.mean(), mean, (var / n) ** 0.5)
    assert k_sigma(xt.var(), var, var * (2 / n) ** 0.5)


@pytest.mark.parametrize("i", [0, 7, 40])
def test_iterated_single_steps_match_closed_form(sched, i):
    """q(x_t|x_0) from t iterated steps q(x_s|x_{s-1}) has the closed-form moments (eq. 4)."""
    n = 200_000
    g = torch.Generator().manual_seed(100 + i)
    x = torch.full((n, 1), -0.8, dtype=torch.float64)
    for j in range(i + 1):
        x = dif.q_step_sample(sched, x, _t(j, n), torch.randn(n, 1, generator=g, dtype=torch.float64))
    mean, var = dif.q_mean_variance(sched, torch.full((1, 1), -0.8, dtype=torch.float64), _t(i, 1))
    assert k_sigma(x.mean(), float(mean), (float(var) / n) ** 0.5)
    assert k_sigma(x.var(), float(var), float(var) * (2 / n) ** 0.5)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("i", [1, 5, 49])
def test_posterior_is_bayes_rule(name, i):
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): product of two Gaussians in x_{t-1}."""
    s = make_schedule(name, 50, warn=False)
    x0, xt = torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[-1.1]], dtype=torch.float64)
    mean, var = dif.q_posterior_mean_variance(s, x0, xt, _t(i, 1))
    beta, alpha = float(s.betas[i]), 1 - float(s.betas[i])
    ab_prev = float(np.prod(1 - s.betas.numpy()[:i]))  # ᾱ_{t-1}: product over steps before this one
    # q(x_t|x_{t-1}) = N(√α x_{t-1}, β): as a function of x_{t-1}, precision α/β, mean x_t/√α
    # q(x_{t-1}|x_0) = N(√ᾱ_{t-1} x_0, 1 - ᾱ_{t-1})
    precision = alpha / beta + 1 / (1 - ab_prev)
    expect_mean = (np.sqrt(alpha) * -1.1 / beta + np.sqrt(ab_prev) * 0.3 / (1 - ab_prev)) / precision
    assert float(var) == pytest.approx(1 / precision, rel=1e-10)
    assert float(mean) == pytest.approx(expect_mean, rel=1e-10)


def test_posterior_at_first_step_returns_x0(sched):
    x0, xt = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    mean, var = dif.q_posterior_mean_variance(sched, x0, xt, _t(0, 5))
    torch.testing.assert_close(mean, x0)
    assert torch.all(var == 0)


@pytest.mark.parametrize("prediction", dif.PREDICTIONS)
def test_parametrisations_agree(sched, prediction):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(64, 2, generator=g, dtype=torch.float64), torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = torch.randint(0, 100, (64,), generator=g)
    xt = dif.q_sample(sched, x0, t, eps)
    out = dif.target_for(sched, prediction, x0, t, eps)
    x0_hat, eps_hat = dif.split_prediction(sched, out, xt, t, prediction)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, eps)
    # a perfect prediction gives zero simple loss and a reverse mean equal to the posterior mean
    assert torch.all(dif.training_loss(sched, out, x0, xt, t, eps, prediction=prediction) < 1e-20)
    mean, _, _ = dif.p_mean_variance(sched, out, xt, t, prediction=prediction)
    torch.testing.assert_close(mean, dif.q_posterior_mean_variance(sched, x0, xt, t)[0])


def test_v_definition(sched):
    x0, eps = torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([[0.5]], dtype=torch.float64)
    i = 30
    a, s = float(sched.sqrt_alpha_bar[i]), float(sched.sqrt_one_minus_alpha_bar[i])
    assert float(dif.v_from_x0_eps(sched, x0, _t(i, 1), eps)) == pytest.approx(a * 0.5 - s * 2.0)


@pytest.mark.parametrize("variance", dif.VARIANCES)
def test_mu_loss_is_weighted_eps_loss(sched, variance):
    """E[1/(2σ²)‖μ̃ - μ_θ‖²] = w_t ‖ε - ε_θ‖² with w_t = β_t²/(2σ_t² α_t (1-ᾱ_t)) (per example)."""
    g = torch.Generator().manual_seed(1)
    B, D = 128, 3
    x0, eps = torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, D, generator=g, dtype=torch.float64)
    t = torch.randint(0, 100, (B,), generator=g)
    xt = dif.q_sample(sched, x0, t, eps)
    eps_model = eps + 0.3 * torch.randn(B, D, generator=g, dtype=torch.float64)
    mu = dif.training_loss(sched, eps_model, x0, xt, t, eps, loss="mu", variance=variance)
    simple = dif.training_loss(sched, eps_model, x0, xt, t, eps, loss="simple")
    beta, alpha, ab = sched.betas[t], sched.alphas[t], sched.alpha_bar[t]
    sigma2 = sched.betas[t] if variance == "beta" else sched.posterior_log_variance_clipped.exp()[t]
    w = beta**2 / (2 * sigma2 * alpha * (1 - ab))
    torch.testing.assert_close(dif.mu_loss_weight(sched, variance)[t], w)
    torch.testing.assert_close(mu, w * D * simple)  # simple is the mean over D, mu the sum


def test_reverse_variance_choices(sched):
    t = _t(10, 1)
    x = torch.zeros(1, 2, dtype=torch.float64)
    _, var_b, _ = dif.p_mean_variance(sched, x, x, t, variance="beta")
    _, var_bt, _ = dif.p_mean_variance(sched, x, x, t, variance="beta_tilde")
    assert float(var_b) == float(sched.betas[10])
    assert float(var_bt) == float(sched.posterior_variance[10])
    with pytest.raises(ValueError, match="allowed"):
        dif.p_mean_variance(sched, x, x, t, variance="learned")


def test_clip_x0_clamps_prediction(sched):
    xt = torch.full((1, 2), 10.0, dtype=torch.float64)
    t = _t(50, 1)
    x0_hat, eps = dif.split_prediction(sched, xt * 0 + 5.0, xt, t, "x0", clip_x0=1.0)
    assert torch.all(x0_hat == 1.0)
    torch.testing.assert_close(dif.x0_from_eps(sched, xt, t, eps), x0_hat)


def test_reverse_step_uses_the_clipped_x0(sched):
    """p_mean_variance passes clip_x0 on: the mean is the posterior mean at the clipped x̂₀ = 1."""
    xt, t = torch.full((1, 2), 10.0, dtype=torch.float64), _t(50, 1)
    mean, _, x0_used = dif.p_mean_variance(sched, xt * 0 + 5.0, xt, t, prediction="x0", clip_x0=1.0)
    assert torch.all(x0_used == 1.0)
    torch.testing.assert_close(mean, dif.q_posterior_mean_variance(sched, x0_used, xt, t)[0])
    unclipped, _, _ = dif.p_mean_variance(sched, xt * 0 + 5.0, xt, t, prediction="x0")
    assert torch.all(unclipped > mean)


def test_inputs_not_modified(sched):
    x0 = torch.randn(4, 2)
    noise = torch.randn(4, 2)
    c0, cn = x0.clone(), noise.clone()
    dif.q_sample(sched, x0, _t(3, 4), noise)
    dif.training_loss(sched, noise, x0, x0, _t(3, 4), noise, loss="mu")
    assert torch.equal(x0, c0) and torch.equal(noise, cn)


def test_ddim_step_variance_follows_eta_squared():
    """DDIM eq. 12/16: σ² = η² β̃_t. Without η the step is deterministic (η = 0, no noise needed);
    at η = 0.5 the noise enters with σ = 0.5 √β̃_t and the ε̂ term with √(1 − ᾱ_prev − σ²) — a power
    of η other than 2 or a default other than 0 fails it."""
    sched = make_schedule("linear", 100)
    g = torch.Generator().manual_seed(0)
    x0, eps, z = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.full((4,), 40)
    ab_prev, post = float(sched.alpha_bar[39]), float(sched.posterior_variance[40])
    default = dif.ddim_step(sched, x0, eps, t)
    torch.testing.assert_close(default, np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * eps)
    sigma2 = 0.25 * post
    want = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev - sigma2) * eps + np.sqrt(sigma2) * z
    torch.testing.assert_close(dif.ddim_step(sched, x0, eps, t, eta=0.5, noise=z), want)


def test_clip_x0_is_symmetric(sched):
    xt, t = torch.tensor([[-10.0, 0.3]], dtype=torch.float64), _t(50, 1)
    x0_hat, _ = dif.split_prediction(sched, torch.tensor([[-5.0, 0.3]], dtype=torch.float64), xt, t, "x0",
                                     clip_x0=1.0)
    torch.testing.assert_close(x0_hat, torch.tensor([[-1.0, 0.3]], dtype=torch.float64))

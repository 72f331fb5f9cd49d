r"""The Gaussian diffusion process: forward steps, posterior, reverse step, parametrisations, losses.

All functions take a :class:`~physdiff.schedule.Schedule`, tensors ``x`` of shape
(B, *data_shape) and timestep indices ``t`` of shape (B,) (see the index convention in
``schedule.py``: index t is the paper's step t+1). Nothing here knows about networks:
a model output is just a tensor.

The equations, in the notation of Ho et al. (2020), with $\alpha_t = 1-\beta_t$ and
$\bar\alpha_t = \prod_{s \le t} \alpha_s$:

- forward step: $q(x_t \mid x_{t-1}) = \mathcal N(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)$;
- closed form: $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$,
  $\varepsilon \sim \mathcal N(0, I)$;
- posterior: $q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)$ with
  $\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t} x_0
  + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t$ and
  $\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$;
- reverse model: $p_\theta(x_{t-1} \mid x_t) = \mathcal N(\mu_\theta(x_t, t), \sigma_t^2 I)$,
  $\mu_\theta = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\varepsilon_\theta\big)$,
  $\sigma_t^2 \in \{\beta_t, \tilde\beta_t\}$;
- simple loss: $\mathbb E\,\lVert \varepsilon - \varepsilon_\theta(x_t, t) \rVert^2$.
"""

from __future__ import annotations

import torch

from . import denoiser as dn
from .denoiser import PREDICTIONS  # noqa: F401  (re-exported)
from .schedule import Schedule

VARIANCES = ("beta", "beta_tilde")
LOSSES = ("simple", "mu")


def sum_flat(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the batch one: (B, ...) → (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch one: (B, ...) → (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


# ---------------------------------------------------------------- forward process


def q_step_sample(sched: Schedule, x_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
    """One forward step, Ho et al. 2020 eq. 2: x_{t+1} = √α x_t + √β ε at index t."""
    return sched.at(sched.alphas.sqrt(), t, x_prev) * x_prev + sched.at(sched.betas.sqrt(), t, x_prev) * noise


def q_mean_variance(sched: Schedule, x0: torch.Tensor, t: torch.Tensor):
    """Closed form q(x_t|x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I), Ho et al. 2020 eq. 4.
    Returns (mean (B, ...), variance (B, 1, ...))."""
    return sched.at("sqrt_alpha_bar", t, x0) * x0, sched.at(1.0 - sched.alpha_bar, t, x0)


def q_sample(sched: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
    """Draw x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (Ho et al. 2020, eq. 4 reparametrised)."""
    return sched.at("sqrt_alpha_bar", t, x0) * x0 + sched.at("sqrt_one_minus_alpha_bar", t, x0) * noise


def q_posterior_mean_variance(sched: Schedule, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
    """Posterior q(x_{t-1}|x_t, x_0) = N(μ̃_t, β̃_t I), Ho et al. 2020 eqs. 6-7.
    Returns (mean (B, ...), variance (B, 1, ...))."""
    mean = sched.at("posterior_mean_coef_x0", t, xt) * x0 + sched.at("posterior_mean_coef_xt", t, xt) * xt
    return mean, sched.at("posterior_variance", t, xt)


# ---------------------------------------------------------------- parametrisations


def x0_from_eps(sched: Schedule, xt, t, eps):
    """x_0 = (x_t - √(1-ᾱ) ε)/√ᾱ (Ho et al. 2020, eq. 4 inverted)."""
    return (xt - sched.at("sqrt_one_minus_alpha_bar", t, xt) * eps) / sched.at("sqrt_alpha_bar", t, xt)


def eps_from_x0(sched: Schedule, xt, t, x0):
    """ε = (x_t - √ᾱ x_0)/√(1-ᾱ)."""
    return (xt - sched.at("sqrt_alpha_bar", t, xt) * x0) / sched.at("sqrt_one_minus_alpha_bar", t, xt)


def v_from_x0_eps(sched: Schedule, x0, t, eps):
    """v = √ᾱ ε - √(1-ᾱ) x_0 (Salimans & Ho 2022, sec. 4)."""
    return sched.at("sqrt_alpha_bar", t, x0) * eps - sched.at("sqrt_one_minus_alpha_bar", t, x0) * x0


def x0_from_v(sched: Schedule, xt, t, v):
    """x_0 = √ᾱ x_t - √(1-ᾱ) v (Salimans & Ho 2022, sec. 4)."""
    return sched.at("sqrt_alpha_bar", t, xt) * xt - sched.at("sqrt_one_minus_alpha_bar", t, xt) * v


def eps_from_v(sched: Schedule, xt, t, v):
    """ε = √(1-ᾱ) x_t + √ᾱ v."""
    return sched.at("sqrt_one_minus_alpha_bar", t, xt) * xt + sched.at("sqrt_alpha_bar", t, xt) * v


def split_prediction(sched: Schedule, model_out, xt, t, prediction: str, clip_x0: float | None = None):
    """Turn a network output of the given parametrisation into (x̂_0, ε̂) at integer indices t,
    with α = √ᾱ_t, σ = √(1-ᾱ_t) read from the schedule's tables (``denoiser.split``).

    ``clip_x0``: if set, x̂_0 is clamped to [-clip_x0, clip_x0] and ε̂ recomputed from it
    (for images in [-1, 1]; leave None for vector data, where clipping distorts it).
    """
    alpha, sigma = sched.at("sqrt_alpha_bar", t, xt), sched.at("sqrt_one_minus_alpha_bar", t, xt)
    x0, eps = dn.split(model_out, xt, alpha, sigma, prediction)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = dn.epsilon_from(x0, xt, alpha, sigma, "x0")
    return x0, eps


def target_for(sched: Schedule, prediction: str, x0, t, noise):
    """What a network of the given parametrisation should output for (x_0, ε)."""
    dn.check_prediction(prediction)
    if prediction == "v":
        return v_from_x0_eps(sched, x0, t, noise)
    return noise if prediction == "eps" else x0


# ---------------------------------------------------------------- reverse process


def reverse_variance_table(sched: Schedule, variance: str) -> torch.Tensor:
    """σ_t² of p_θ(x_{t-1}|x_t): β_t or β̃_t (Ho et al. 2020, sec. 3.2). Shape (T,)."""
    if variance == "beta":
        return sched.betas
    if variance == "beta_tilde":
        return sched.posterior_variance
    raise ValueError(f"unknown variance {variance!r}; allowed: {', '.join(VARIANCES)}")


def p_mean_variance(sched: Schedule, model_out, xt, t, *, prediction="eps", variance="beta",
                    clip_x0: float | None = None):
    """Reverse step p_θ(x_{t-1}|x_t) = N(μ_θ, σ_t² I) with μ_θ = μ̃_t(x_t, x̂_0)
    (Ho et al. 2020, eqs. 7 and 11). Returns (mean, variance (B, 1, ...), x̂_0)."""
    x0_hat, _ = split_prediction(sched, model_out, xt, t, prediction, clip_x0)
    mean, _ = q_posterior_mean_variance(sched, x0_hat, xt, t)
    return mean, sched.at(reverse_variance_table(sched, variance), t, xt), x0_hat


# ---------------------------------------------------------------- losses


def loss_variance_table(sched: Schedule, variance: str) -> torch.Tensor:
    """σ_t² in the denominator of the ``mu`` loss: as :func:`reverse_variance_table`, except
    that β̃_1 = 0 is replaced by β̃_2 (improved-diffusion's clipped log-variance)."""
    if variance == "beta_tilde":
        return sched.posterior_log_variance_clipped.exp()
    return reverse_variance_table(sched, variance)


def mu_loss_weight(sched: Schedule, variance: str) -> torch.Tensor:
    """Per-timestep weight w_t with L_mu = w_t ‖ε - ε_θ‖² (summed over dimensions).

    From Ho et al. 2020 eqs. 10-12: μ̃_t - μ_θ = β_t / (√α_t √(1-ᾱ_t)) (ε_θ - ε), so
    1/(2σ_t²) ‖μ̃_t - μ_θ‖² = β_t² / (2 σ_t² α_t (1-ᾱ_t)) ‖ε - ε_θ‖². For σ² = β̃, whose
    first value is 0, σ_1² := β̃_2 (the clipped log-variance). Shape (T,).
    """
    sigma2 = loss_variance_table(sched, variance)
    return sched.betas**2 / (2.0 * sigma2 * sched.alphas * (1.0 - sched.alpha_bar))


def training_loss(sched: Schedule, model_out, x0, xt, t, noise, *, prediction="eps",
                  loss="simple", variance="beta") -> torch.Tensor:
    """One value per example, shape (B,).

    ``simple``: mean over dimensions of ‖target - model_out‖² where the target is ε, x_0 or
      v (Ho et al. 2020, eq. 14, L_simple).
    ``mu``: the course's E[1/(2σ_t²) ‖μ̃_t(x_t, x_0) - μ_θ(x_t, t)‖²] summed over dimensions
      (Ho et al. 2020, eq. 8, L_{t-1}); σ_1² for β̃ as in :func:`mu_loss_weight`.
    """
    if loss == "simple":
        return mean_flat((target_for(sched, prediction, x0, t, noise) - model_out) ** 2)
    if loss == "mu":
        sigma2_table = loss_variance_table(sched, variance)
        mu_true, _ = q_posterior_mean_variance(sched, x0, xt, t)
        x0_hat, _ = split_prediction(sched, model_out, xt, t, prediction)
        mu_model, _ = q_posterior_mean_variance(sched, x0_hat, xt, t)
        return sum_flat((mu_true - mu_model) ** 2) / (2.0 * sched.at(sigma2_table, t, x0).reshape(-1))
    raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")


def ddim_step(sched: Schedule, x0_hat, eps_hat, t, *, eta: float = 0.0, noise=None):
    """Song et al. 2021 (DDIM), eq. 12, from index t to the previous index of ``sched``:
    x_prev = √ᾱ_prev x̂_0 + √(1 - ᾱ_prev - σ²) ε̂ + σ z, σ² = η² β̃_t (eq. 16 with the
    posterior variance of the — possibly respaced — schedule). η = 0: deterministic;
    η = 1: the ancestral DDPM step with σ² = β̃."""
    ab_prev = sched.at("alpha_bar_prev", t, x0_hat)
    sigma2 = eta**2 * sched.at("posterior_variance", t, x0_hat)
    out = ab_prev.sqrt() * x0_hat + (1.0 - ab_prev - sigma2).clamp(min=0).sqrt() * eps_hat
    if eta > 0:
        out = out + sigma2.sqrt() * noise
    return out

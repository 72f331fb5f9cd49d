"""The one place where a network's output (ε, x₀ or v) becomes ε̂, x̂₀ and v̂.

For x_t = α x₀ + σ ε with α = √ᾱ, σ = √(1-ᾱ) (Ho et al. 2020, eq. 4) the three
parametrisations are affine in each other at fixed x_t:

    x₀ = (x_t - σ ε)/α,   ε = (x_t - α x₀)/σ,
    v = α ε - σ x₀,       x₀ = α x_t - σ v,   ε = σ x_t + α v      (Salimans & Ho 2022, sec. 4).

:func:`split` is that conversion as a pure function of (output, x_t, α, σ, prediction); the
discrete-time code (``diffusion.split_prediction``) calls it with α, σ read from the schedule's
tables. :class:`Denoiser` wraps a network callable ``net(x, t, cond)`` with its parametrisation
and schedule and gives the prediction at any *fractional* index t, with ᾱ(t) read by linear
interpolation of u = log σ̄ between integer indices (``schedule.log_sigma_bar_at``; the clock of
the probability-flow ODE, ``ode.py``): ᾱ = 1/(1 + σ̄²) = sigmoid(-2u).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from .errors import PhysdiffError
from .schedule import Schedule, index_at_log_sigma_bar, log_sigma_bar_at, log_sigma_bar_table

PREDICTIONS = ("eps", "x0", "v")


class UnknownPrediction(PhysdiffError, ValueError):
    """A parametrisation other than eps, x0 or v."""


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise UnknownPrediction(f"unknown prediction {prediction!r}; allowed: {', '.join(PREDICTIONS)}")
    return prediction


def epsilon_from(out, x, alpha, sigma, prediction: str):
    """ε̂ from a network output ``out`` of parametrisation ``prediction`` at x_t = x."""
    if prediction == "eps":
        return out
    if prediction == "x0":  # ε = (x - √ᾱ x₀)/√(1-ᾱ)
        return (x - alpha * out) / sigma
    if prediction == "v":  # ε = √(1-ᾱ) x + √ᾱ v
        return sigma * x + alpha * out
    check_prediction(prediction)


def x0_from(out, x, alpha, sigma, prediction: str):
    """x̂₀ from a network output ``out`` of parametrisation ``prediction`` at x_t = x."""
    if prediction == "eps":  # x₀ = (x - √(1-ᾱ) ε)/√ᾱ
        return (x - sigma * out) / alpha
    if prediction == "x0":
        return out
    if prediction == "v":  # x₀ = √ᾱ x - √(1-ᾱ) v
        return alpha * x - sigma * out
    check_prediction(prediction)


def v_from(x0, eps, alpha, sigma):
    """v = √ᾱ ε - √(1-ᾱ) x₀ (Salimans & Ho 2022, sec. 4)."""
    return alpha * eps - sigma * x0


def split(out, x, alpha, sigma, prediction: str):
    """(x̂₀, ε̂) from a network output of parametrisation ``prediction`` at x_t = x; α, σ
    broadcast against x."""
    check_prediction(prediction)
    return x0_from(out, x, alpha, sigma, prediction), epsilon_from(out, x, alpha, sigma, prediction)


def output_for(x0, eps, alpha, sigma, prediction: str):
    """What a network of parametrisation ``prediction`` outputs for (x₀, ε)."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return v_from(x0, eps, alpha, sigma)
    check_prediction(prediction)


def epsilon_divergence(trace, dim: int, alpha, sigma, prediction: str):
    """∇·ε̂ from the network's divergence tr ∂out/∂x (``trace``, (B,)) for data of ``dim``
    dimensions, through the affine conversion of :func:`epsilon_from` (∇·x = D):
    eps: tr; x0: (D - α tr)/σ; v: σ D + α tr."""
    if prediction == "eps":
        return trace
    if prediction == "x0":
        return (dim - alpha * trace) / sigma
    if prediction == "v":
        return sigma * dim + alpha * trace
    check_prediction(prediction)


def alpha_bar_of(u: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """ᾱ = 1/(1 + σ̄²) = sigmoid(-2u) at u = log σ̄, in ``like``'s dtype; a (B,) u is shaped
    (B, 1, ..., 1) to broadcast against ``like`` (B, *shape), a 0-d u stays a scalar."""
    ab = torch.sigmoid(-2.0 * u.to(like.dtype))
    return ab.reshape(-1, *([1] * (like.dim() - 1))) if ab.dim() else ab


@dataclass(frozen=True, eq=False)
class Prediction:
    """A network output ``out`` of parametrisation ``prediction`` at x_t = ``x`` with
    ᾱ = ``alpha_bar`` (broadcastable against x); ε̂, x̂₀ and v̂ are computed on first use."""

    out: torch.Tensor
    x: torch.Tensor
    alpha_bar: torch.Tensor
    prediction: str

    @cached_property
    def alpha(self) -> torch.Tensor:
        return self.alpha_bar.sqrt()

    @cached_property
    def sigma(self) -> torch.Tensor:
        return (1.0 - self.alpha_bar).sqrt()

    @cached_property
    def eps(self) -> torch.Tensor:
        return epsilon_from(self.out, self.x, self.alpha, self.sigma, self.prediction)

    @cached_property
    def x0(self) -> torch.Tensor:
        return x0_from(self.out, self.x, self.alpha, self.sigma, self.prediction)

    @cached_property
    def v(self) -> torch.Tensor:
        return self.out if self.prediction == "v" else v_from(self.x0, self.eps, self.alpha, self.sigma)


class Denoiser:
    """A network callable ``net(x, t, cond)`` predicting ``prediction`` (eps, x0, v) for the
    schedule ``sched``, read at any fractional index t: ``Denoiser(...)(x, t).eps`` (``.x0``,
    ``.v``). The log σ̄ table lives on ``device`` (default: the schedule's); no host
    synchronisation. :meth:`at_log_sigma_bar` evaluates at u = log σ̄ (the ODE's clock),
    reading ᾱ from u itself."""

    def __init__(self, net, sched: Schedule, prediction: str, device=None):
        self.net, self.prediction = net, check_prediction(prediction)
        self.u_table = log_sigma_bar_table(sched, device)

    def log_sigma_bar(self, t: torch.Tensor) -> torch.Tensor:
        """u(t) at fractional indices t (``schedule.log_sigma_bar_at``)."""
        return log_sigma_bar_at(self.u_table, torch.as_tensor(t))

    def time_index(self, u: torch.Tensor) -> torch.Tensor:
        """t(u), the fractional index at log σ̄ = u (``schedule.index_at_log_sigma_bar``)."""
        return index_at_log_sigma_bar(self.u_table, torch.as_tensor(u))

    def wrap(self, out: torch.Tensor, x: torch.Tensor, u: torch.Tensor) -> Prediction:
        """The :class:`Prediction` of output ``out`` at x_t = x and log σ̄ = u (0-d or (B,))."""
        return Prediction(out, x, alpha_bar_of(u, x), self.prediction)

    def at_log_sigma_bar(self, x: torch.Tensor, u: torch.Tensor, cond=None) -> Prediction:
        """The prediction at log σ̄ = u: the network at t(u) (a (B,) tensor in x's dtype)."""
        t = self.time_index(u).to(x.dtype).expand(x.shape[0])
        return self.wrap(self.net(x, t, cond), x, u)

    def __call__(self, x: torch.Tensor, t, cond=None) -> Prediction:
        """The prediction at fractional indices t ((B,), or a number for the whole batch)."""
        t = torch.as_tensor(t, device=x.device)
        t = (t if t.is_floating_point() else t.double()).expand(x.shape[0])
        return self.wrap(self.net(x, t.to(x.dtype), cond), x, self.log_sigma_bar(t))

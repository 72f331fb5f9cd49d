"""Samplers: plain functions of (model, schedule, x_T, ...) returning samples x_0.

``model(x, t, cond)`` is any callable returning the network output (ε, x_0 or v,
named by ``prediction``) with the shape of ``x``; ``t`` is a (B,) int64 tensor of
timestep indices (see ``schedule.py``). Randomness comes only from ``generator``: a
``torch.Generator`` or an :class:`IndexedNoise` (sample i's noise depends only on the
seed and i, not on the batch it falls in). ``callback(i, t, x)`` is called after each
step with the new state; use it for trajectories and progress.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from . import diffusion as dif
from .schedule import Schedule, continuous_time, log_sigma_bar, respace, timestep_subsequence

SAMPLERS = ("ddpm", "ddim", "dpm-solver", "ode")


class IndexedNoise:
    """Gaussian noise for samples ``start, start+1, ..., start+count-1`` in which the draws of
    sample i depend only on ``seed`` and i.

    Samples are grouped in fixed blocks of ``block`` indices, each with its own CPU
    generator seeded from (seed, block number) by NumPy's SeedSequence; every call to
    :meth:`randn_like` advances all blocks by one draw. So the same seed gives the same
    sample i whatever the batch size, the number of ranks, or the device.
    """

    def __init__(self, seed: int, start: int, count: int, block: int = 64):
        self.start, self.count, self.block = start, count, block
        first, last = start // block, (start + count + block - 1) // block
        self.offset = start - first * block  # any start works: the block is drawn whole, then cut
        self.generators = []
        for j in range(first, last):
            state = np.random.SeedSequence([int(seed), j]).generate_state(2, dtype=np.uint32)
            g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            self.generators.append(g)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.count:
            raise ValueError(f"IndexedNoise for {self.count} samples asked for a batch of {x.shape[0]}")
        draws = [torch.randn((self.block, *x.shape[1:]), generator=g) for g in self.generators]
        return torch.cat(draws)[self.offset: self.offset + self.count].to(device=x.device, dtype=x.dtype)


def randn_like(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Standard normal noise shaped like x, from a torch.Generator or an IndexedNoise."""
    if isinstance(generator, IndexedNoise):
        return generator.randn_like(x)
    if generator is not None and generator.device != x.device:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class CountingModel:
    """Wraps a model and counts its evaluations (NFE: one per call on a batch)."""

    def __init__(self, model: Callable):
        self.model, self.nfe = model, 0

    def __call__(self, x, t, cond=None):
        self.nfe += 1
        return self.model(x, t, cond)


class GuidedModel:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6): the output for label c is
    (1 + w)·f(x, t, c) − w·f(x, t, ∅), with ∅ the network's "no label" token ``null_label``.
    w = 0 is the plain conditional model; the outputs ε, x_0 and v are affine in each other at
    fixed x_t, so the same combination serves every prediction type. Both evaluations run as
    one doubled batch (one NFE). Rows whose label is ∅ (or ``cond=None``) are unguided."""

    def __init__(self, model: Callable, guidance: float, null_label: int):
        self.model, self.w, self.null = model, float(guidance), null_label

    def __call__(self, x, t, cond=None):
        if cond is None or self.w == 0.0:
            return self.model(x, t, cond)
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, torch.full_like(cond, self.null)]))
        c, u = both.chunk(2)
        return c + self.w * (c - u)


def _visited_timesteps(sched: Schedule, steps: int | None, spacing: str) -> list[int]:
    """Ascending indices a K-step sampler visits: all T when ``steps`` is None."""
    return list(range(sched.T)) if steps is None else timestep_subsequence(sched.T, steps, spacing, sched)


def _timestep(i: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)


@torch.no_grad()
def ddpm_sample(model, sched: Schedule, x_T: torch.Tensor, *, steps: int | None = None,
                spacing: str = "uniform", prediction: str = "eps", variance: str = "beta",
                clip_x0: float | None = None, cond=None, generator=None, callback=None) -> torch.Tensor:
    """Ancestral sampling, Ho et al. 2020 Algorithm 2:
    x_{t-1} = μ_θ(x_t, t) + σ_t z, z ~ N(0, I) for t > 1 and z = 0 at the last step.

    ``steps``: visit only K timesteps (``spacing`` as in timestep_subsequence) with the
    respaced schedule of Nichol & Dhariwal 2021, sec. 4; None = all T.
    x_T: (B, *data_shape) standard normal. Returns x_0 of the same shape. NFE = K.
    ``callback(i, t, x)`` gets the paper step i of the new state x_i (original indexing).
    """
    taus = _visited_timesteps(sched, steps, spacing)
    sub = (sched if steps is None else respace(sched, taus)).to(x_T.device)
    x = x_T
    for k in reversed(range(len(taus))):
        t_sub, t_model = _timestep(k, x), _timestep(taus[k], x)
        mean, var, _ = dif.p_mean_variance(sub, model(x, t_model, cond), x, t_sub, prediction=prediction,
                                           variance=variance, clip_x0=clip_x0)
        x = mean + var.sqrt() * randn_like(x, generator) if k > 0 else mean
        if callback is not None:
            callback(taus[k - 1] + 1 if k > 0 else 0, t_model, x)
    return x


@torch.no_grad()
def ddim_sample(model, sched: Schedule, x_T: torch.Tensor, *, steps: int | None = None,
                spacing: str = "uniform", eta: float = 0.0, prediction: str = "eps",
                clip_x0: float | None = None, cond=None, generator=None, callback=None, **_) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) on K timesteps: η = 0 deterministic, η = 1 equal to
    ancestral DDPM with σ² = β̃. NFE = K."""
    taus = _visited_timesteps(sched, steps, spacing)
    sub = respace(sched, taus).to(x_T.device)
    x = x_T
    for k in reversed(range(len(taus))):
        t_sub, t_model = _timestep(k, x), _timestep(taus[k], x)
        x0_hat, eps_hat = dif.split_prediction(sub, model(x, t_model, cond), x, t_sub, prediction, clip_x0)
        noise = randn_like(x, generator) if eta > 0 and k > 0 else None
        x = dif.ddim_step(sub, x0_hat, eps_hat, t_sub, eta=eta if k > 0 else 0.0, noise=noise)
        if callback is not None:
            callback(taus[k - 1] + 1 if k > 0 else 0, t_model, x)
    return x


@torch.no_grad()
def ddim_invert(model, sched: Schedule, x0: torch.Tensor, *, steps: int | None = None,
                spacing: str = "uniform", prediction: str = "eps", cond=None) -> torch.Tensor:
    """Deterministic DDIM inversion x_0 → x_T (the η = 0 update run forwards, Song et al. 2021,
    sec. 4.3): x_next = √ᾱ_next x̂_0(x, t) + √(1-ᾱ_next) ε̂(x, t), the network evaluated at the
    current index (at the first step, at τ_1). NFE = K."""
    taus = _visited_timesteps(sched, steps, spacing)
    sub = respace(sched, taus).to(x0.device)
    x = x0
    for k in range(len(taus)):
        t_eval = _timestep(taus[max(k - 1, 0)], x)
        t_cur = _timestep(max(k - 1, 0), x)
        out = model(x, t_eval, cond)
        if k == 0:  # from the data (ᾱ = 1): x_τ1 = √ᾱ x_0 + √(1-ᾱ) ε̂(x_0, τ_1)
            _, eps_hat = dif.split_prediction(sub, out, x, t_cur, prediction)
            x0_hat = x
        else:
            x0_hat, eps_hat = dif.split_prediction(sub, out, x, t_cur, prediction)
        t_next = _timestep(k, x)
        x = sub.at("sqrt_alpha_bar", t_next, x) * x0_hat + sub.at("sqrt_one_minus_alpha_bar", t_next, x) * eps_hat
    return x


@torch.no_grad()
def dpm_solver_sample(model, sched: Schedule, x_T: torch.Tensor, *, steps: int = 20,
                      spacing: str = "logsnr", prediction: str = "eps", clip_x0: float | None = None,
                      cond=None, callback=None, **_) -> torch.Tensor:
    """DPM-Solver++(2M), Lu et al. 2022 ("DPM-Solver++", Algorithm 2), for a discrete-time model.

    With α = √ᾱ, σ = √(1-ᾱ), λ = log(α/σ) and h_i = λ_{t_i} - λ_{t_{i-1}}:
    x_{t_i} = (σ_{t_i}/σ_{t_{i-1}}) x - α_{t_i}(e^{-h_i} - 1) D_i, with D_i = x̂_0 at the first
    step and (1 + 1/2r) x̂_0^{(i-1)} - (1/2r) x̂_0^{(i-2)}, r = h_{i-1}/h_i, after it. The last
    step, to σ = 0, is first order (it returns x̂_0), as in the solver's "lower order final".
    Deterministic; NFE = K. Default spacing: uniform in λ, which the solver's step-size
    ratios r need (with uniform t the last step spans a large λ range and 2M overshoots).
    """
    taus = timestep_subsequence(sched.T, steps, spacing, sched)[::-1]  # descending
    sched = sched.to(x_T.device)
    lam = -torch.from_numpy(log_sigma_bar(sched)).to(x_T.device)
    x, prev_x0, prev_h = x_T, None, None
    for k, tau in enumerate(taus):
        t = _timestep(tau, x)
        x0_hat, _ = dif.split_prediction(sched, model(x, t, cond), x, t, prediction, clip_x0)
        if k == len(taus) - 1:
            x = x0_hat
            if callback is not None:
                callback(0, t, x)
            break
        nxt = _timestep(taus[k + 1], x)
        h = float(lam[taus[k + 1]] - lam[tau])
        if prev_x0 is None:
            d = x0_hat
        else:
            r = prev_h / h
            d = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * prev_x0
        sigma_ratio = sched.at("sqrt_one_minus_alpha_bar", nxt, x) / sched.at("sqrt_one_minus_alpha_bar", t, x)
        x = sigma_ratio * x - sched.at("sqrt_alpha_bar", nxt, x) * math.expm1(-h) * d
        prev_x0, prev_h = x0_hat, h
        if callback is not None:
            callback(taus[k + 1] + 1, t, x)
    return x


def _ode_rhs(model, sched: Schedule, prediction: str, cond, shape, device, dtype):
    """f(u, x) of the probability-flow ODE in u = log σ̄ (σ̄² = (1-ᾱ)/ᾱ):
    dx/du = -(1-ᾱ) x + √(1-ᾱ) ε̂(x, t(u)), which is DDIM's ODE dx̄/dσ̄ = ε̂ (Song et al. 2021,
    DDIM eq. 14) written for x = √ᾱ x̄; t(u) is the fractional index (continuous_time)."""

    def rhs(u: float, x: torch.Tensor) -> torch.Tensor:
        ab = 1.0 / (1.0 + math.exp(2.0 * u))
        t = torch.full((shape[0],), float(continuous_time(sched, u)), device=device, dtype=dtype)
        out = model(x, t, cond)
        if prediction != "eps":
            at_u = Schedule("constant", torch.tensor([1.0 - ab], dtype=torch.float64))  # ᾱ_0 = ab
            _, out = dif.split_prediction(at_u, out, x, torch.zeros(shape[0], dtype=torch.long, device=device),
                                          prediction)
        return -(1.0 - ab) * x + math.sqrt(1.0 - ab) * out

    return rhs


@torch.no_grad()
def ode_sample(model, sched: Schedule, x_T: torch.Tensor, *, rtol: float = 1e-5, atol: float = 1e-5,
               prediction: str = "eps", cond=None, method: str = "RK45", **_) -> tuple[torch.Tensor, int]:
    """Integrate the probability-flow ODE (see _ode_rhs) from index T-1 down to index 0 with
    SciPy's adaptive ``solve_ivp`` (Dormand-Prince RK45 by default). Returns (x at index 0, NFE).
    The state at index 0 carries noise √(1-ᾱ_0) ≈ 1e-2 (standardised units), as in Song et al.
    2021 (score SDE), which stop at a small time ε rather than at 0."""
    from scipy.integrate import solve_ivp

    u = log_sigma_bar(sched)
    counter = CountingModel(model)
    rhs = _ode_rhs(counter, sched, prediction, cond, x_T.shape, x_T.device, x_T.dtype)

    def f(s, y):
        x = torch.from_numpy(y).reshape(x_T.shape).to(device=x_T.device, dtype=x_T.dtype)
        return rhs(s, x).reshape(-1).double().cpu().numpy()

    sol = solve_ivp(f, (u[-1], u[0]), x_T.reshape(-1).double().cpu().numpy(), method=method,
                    rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"ODE solver failed: {sol.message}")
    x = torch.from_numpy(sol.y[:, -1]).reshape(x_T.shape).to(device=x_T.device, dtype=x_T.dtype)
    return x, counter.nfe


def sample_with_trajectory(sampler, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``sampler`` and also return every intermediate state, stacked: (steps, B, ...)."""
    states = []
    user_cb = kwargs.pop("callback", None)

    def keep(i, t, x):
        states.append(x.detach().cpu())
        if user_cb is not None:
            user_cb(i, t, x)

    out = sampler(*args, callback=keep, **kwargs)
    return out, torch.stack(states)

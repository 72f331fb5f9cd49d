"""Noise schedules β_t and every table derived from them, in float64.

Indexing convention used throughout physdiff: a timestep *index* ``t`` runs over
0, ..., T-1 and stands for the paper's step t+1 of Ho et al. 2020. So ``betas[t]`` is
β_{t+1}, ``alpha_bar[t]`` is ᾱ_{t+1} = ∏_{s≤t+1} α_s, and ``alpha_bar_prev[t]`` is ᾱ_t
(with ᾱ_0 = 1). The forward step at index t maps x_t → x_{t+1} in the paper's labels;
the reverse step at index t maps x_{t+1} → x_t, and index 0 produces the data x_0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

SCHEDULES = ("linear", "cosine", "sigmoid")
MAX_BETA = 0.999  # Nichol & Dhariwal 2021, sec. 3.2: clip to avoid a singularity at t = T
SIGNAL_WARNING = 1e-2  # √ᾱ_T above this: x_T still carries signal, the prior N(0, I) is wrong


class ScheduleWarning(UserWarning):
    """The last step of a schedule leaves signal in x_T."""


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. 2020 (sec. 4): β linear from 1e-4 to 0.02 at T = 1000.

    For T ≠ 1000 both ends are multiplied by 1000/T (the rescaling of Nichol & Dhariwal
    2021, improved-diffusion), so Σβ_t — and hence ᾱ_T ≈ exp(-Σβ_t) — stays comparable.
    This departs from the paper for T ≠ 1000 and is deliberate: without it a short linear
    schedule keeps most of the signal at t = T. β is clipped at MAX_BETA.
    """
    scale = 1000.0 / T
    betas = np.linspace(scale * beta_start, scale * beta_end, T, dtype=np.float64)
    return np.minimum(betas, MAX_BETA)


def cosine_betas(T: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²(π/2 · (t/T + s)/(1 + s)),
    β_t = 1 - ᾱ(t)/ᾱ(t-1), clipped at 0.999."""
    steps = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], MAX_BETA)


def sigmoid_betas(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> np.ndarray:
    """Sigmoid schedule of Chen 2023 ("On the importance of noise scheduling", Alg. 1):
    ᾱ(τ) = (σ(end/τ) - σ((τ(end-start)+start)/τ)) / (σ(end/τ) - σ(start/τ)), τ ∈ [0, 1];
    β_t = 1 - ᾱ(t)/ᾱ(t-1), clipped at 0.999."""

    def sig(z):
        return 1.0 / (1.0 + np.exp(-z))

    u = np.arange(T + 1, dtype=np.float64) / T
    v_start, v_end = sig(start / tau), sig(end / tau)
    alpha_bar = (v_end - sig((u * (end - start) + start) / tau)) / (v_end - v_start)
    alpha_bar = np.clip(alpha_bar, 0.0, 1.0)
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], MAX_BETA)


@dataclass(frozen=True, eq=False)
class Schedule:
    """A β schedule and its derived tables (all float64 tensors of shape (T,)).

    Build with :func:`make_schedule`. Use :meth:`at` to read a table at a batch of
    timestep indices broadcast against a data tensor.
    """

    name: str
    betas: torch.Tensor
    alphas: torch.Tensor = field(init=False)
    alpha_bar: torch.Tensor = field(init=False)
    alpha_bar_prev: torch.Tensor = field(init=False)
    sqrt_alpha_bar: torch.Tensor = field(init=False)
    sqrt_one_minus_alpha_bar: torch.Tensor = field(init=False)
    posterior_variance: torch.Tensor = field(init=False)
    posterior_log_variance_clipped: torch.Tensor = field(init=False)
    posterior_mean_coef_x0: torch.Tensor = field(init=False)
    posterior_mean_coef_xt: torch.Tensor = field(init=False)

    def __post_init__(self):
        b = self.betas.to(torch.float64)
        set_ = object.__setattr__
        set_(self, "betas", b)
        alphas = 1.0 - b
        alpha_bar = torch.cumprod(alphas, 0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=b.dtype, device=b.device), alpha_bar[:-1]])
        set_(self, "alphas", alphas)
        set_(self, "alpha_bar", alpha_bar)
        set_(self, "alpha_bar_prev", alpha_bar_prev)
        set_(self, "sqrt_alpha_bar", alpha_bar.sqrt())
        set_(self, "sqrt_one_minus_alpha_bar", (1.0 - alpha_bar).sqrt())
        # Ho et al. 2020, eq. 7: β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t   (β̃_1 = 0)
        post_var = b * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        set_(self, "posterior_variance", post_var)
        # log β̃ with β̃_1 := β̃_2, since β̃_1 = 0 (improved-diffusion's convention)
        clipped = torch.cat([post_var[1:2], post_var[1:]]) if len(b) > 1 else b.clone()
        set_(self, "posterior_log_variance_clipped", clipped.log())
        # Ho et al. 2020, eq. 7: μ̃_t = √ᾱ_{t-1} β_t/(1-ᾱ_t) x_0 + √α_t (1-ᾱ_{t-1})/(1-ᾱ_t) x_t
        set_(self, "posterior_mean_coef_x0", alpha_bar_prev.sqrt() * b / (1.0 - alpha_bar))
        set_(self, "posterior_mean_coef_xt", alphas.sqrt() * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar))

    @property
    def T(self) -> int:
        return int(self.betas.shape[0])

    def to(self, device) -> Schedule:
        """The same schedule with its tables on ``device`` (still float64 where supported)."""
        device = torch.device(device)
        if self.betas.device == device:
            return self
        return Schedule(self.name, self.betas.to(device))

    def at(self, table: torch.Tensor | str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` cast to ``like``'s dtype/device and shaped (B, 1, ..., 1) to broadcast
        against ``like`` of shape (B, *data_shape). ``t``: (B,) int64 indices."""
        if isinstance(table, str):
            table = getattr(self, table)
        values = table.to(like.device)[t.to(like.device)]
        return values.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def make_schedule(name: str = "linear", T: int = 1000, *, warn: bool = True) -> Schedule:
    """Build a named schedule with T steps. Warns (ScheduleWarning) when √ᾱ_T > 1e-2."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"timesteps must be an integer >= 1, got {T!r}")
    betas = {"linear": linear_betas, "cosine": cosine_betas, "sigmoid": sigmoid_betas}[name](T)
    sched = Schedule(name, torch.from_numpy(betas))
    if warn:
        warn_if_signal_left(sched)
    return sched


def warn_if_signal_left(sched: Schedule) -> bool:
    """Warn (ScheduleWarning) and return True when √ᾱ_T > 1e-2: x_T then still carries
    signal, and a sampler that starts from N(0, I) starts from the wrong prior."""
    signal = float(sched.sqrt_alpha_bar[-1])
    if signal <= SIGNAL_WARNING:
        return False
    warnings.warn(
        f"schedule {sched.name!r} with T={sched.T} leaves √ᾱ_T = {signal:.3g} of the signal at the "
        f"last step (> {SIGNAL_WARNING}); sampling from N(0, I) then starts from the wrong prior. "
        "Use more timesteps or another schedule.",
        ScheduleWarning,
        stacklevel=3,
    )
    return True


SPACINGS = ("uniform", "quadratic", "trailing", "logsnr", "karras")


def timestep_subsequence(T: int, K: int, spacing: str = "uniform", sched: Schedule | None = None) -> list[int]:
    """K timestep indices τ_1 < ... < τ_K out of 0..T-1 for a K-step sampler.

    ``uniform``: round(linspace(0, T-1, K)) (both ends included); ``quadratic``: τ_i ∝ i²
    (Song et al. 2021, DDIM, sec. D.2), denser near the data; ``trailing``: round(T - i·T/K) - 1
    (Lin et al. 2024, Table 2), always starting at index T-1; ``logsnr``: uniform in
    λ = log(√ᾱ/√(1-ᾱ)) between the two ends (Lu et al. 2022, DPM-Solver, sec. 3.3; needs
    ``sched``); ``karras``: σ = √((1-ᾱ)/ᾱ) = e^{-λ} spaced uniformly in σ^{1/ρ}, ρ = 7, between
    the two ends (Karras et al. 2022, EDM, eq. 5; denser near the data than logsnr; needs
    ``sched``). Repeats from rounding are pushed up
    by one so the K indices are distinct.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    if not 1 <= K <= T:
        raise ValueError(f"steps must be between 1 and T = {T}, got {K}")
    if spacing == "uniform":
        taus = np.round(np.linspace(0, T - 1, K)).astype(int) if K > 1 else np.array([T - 1])
    elif spacing == "quadratic":
        taus = np.round(np.linspace(0, np.sqrt(T - 1), K) ** 2).astype(int) if K > 1 else np.array([T - 1])
    elif spacing == "trailing":
        taus = np.round(np.arange(T, 0, -T / K)).astype(int)[:K][::-1] - 1
    else:
        if sched is None:
            raise ValueError(f"{spacing} spacing needs the schedule")
        u = log_sigma_bar(sched)  # log σ_EDM, increasing with the index
        grid = np.linspace(u[0], u[-1], K)
        if spacing == "karras":
            rho = 7.0
            grid = rho * np.log(np.linspace(np.exp(u[0] / rho), np.exp(u[-1] / rho), K))
        taus = np.round(np.interp(grid, u, np.arange(T))).astype(int) if K > 1 else np.array([T - 1])
    taus = list(taus)
    for i in range(1, K):
        taus[i] = max(taus[i], taus[i - 1] + 1)
    if taus[-1] > T - 1:  # pushed past the end: pull down from the top
        taus[-1] = T - 1
        for i in range(K - 2, -1, -1):
            taus[i] = min(taus[i], taus[i + 1] - 1)
    return [int(t) for t in taus]


def respace(sched: Schedule, taus: list[int]) -> Schedule:
    """The schedule seen by a sampler that visits only indices ``taus`` (ascending):
    ᾱ'_i = ᾱ_{τ_i}, so β'_i = 1 - ᾱ_{τ_i}/ᾱ_{τ_{i-1}} (Nichol & Dhariwal 2021, sec. 4)."""
    ab = sched.alpha_bar[torch.as_tensor(taus)]
    prev = torch.cat([torch.ones(1, dtype=ab.dtype, device=ab.device), ab[:-1]])
    return Schedule(f"{sched.name}[{len(taus)} of {sched.T}]", 1.0 - ab / prev)


def log_sigma_bar(sched: Schedule) -> np.ndarray:
    """u_i = log σ̄_i with σ̄ = √((1-ᾱ)/ᾱ), the noise-to-signal ratio (Song et al. 2021,
    DDIM, sec. 4.3); increasing in the index. Shape (T,), float64."""
    ab = sched.alpha_bar.cpu().numpy()
    return 0.5 * (np.log1p(-ab) - np.log(ab))


def log_sigma_bar_table(sched: Schedule, device=None) -> torch.Tensor:
    """:func:`log_sigma_bar` as a float64 torch tensor (T,) on ``device`` (default: the
    schedule's), the table that :func:`log_sigma_bar_at` and :func:`index_at_log_sigma_bar` read."""
    return torch.from_numpy(log_sigma_bar(sched)).to(device if device is not None else sched.betas.device)


def log_sigma_bar_at(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """u = log σ̄ at fractional indices t (any shape), by linear interpolation of the table
    u_i = log σ̄_i between integer indices (exact at integers); t is clamped to [0, T-1].
    In torch on the table's device, no host synchronisation; the result has the table's dtype.
    The inverse of :func:`index_at_log_sigma_bar`."""
    t = t.detach().to(table).clamp(0, len(table) - 1)
    if len(table) == 1:
        return table[0].expand(t.shape)
    lo = t.floor().clamp(0, len(table) - 2).long()
    frac = t - lo.to(t.dtype)
    return table[lo] + frac * (table[lo + 1] - table[lo])


def index_at_log_sigma_bar(table: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The fractional index t at log σ̄ = u (any shape): linear interpolation of the increasing
    table u_i = log σ̄_i between integer indices, u clamped to [u_0, u_{T-1}] (so t ∈ [0, T-1]).
    In torch on the table's device, no host synchronisation; the result has the table's dtype."""
    u = u.detach().to(table).clamp(table[0], table[-1])
    if len(table) == 1:
        return torch.zeros_like(u)
    hi = torch.searchsorted(table, u.reshape(-1)).clamp(1, len(table) - 1).reshape(u.shape)
    lo = hi - 1
    frac = (u - table[lo]) / (table[hi] - table[lo])
    return lo.to(table) + frac


def continuous_time(sched: Schedule, u: np.ndarray | float) -> np.ndarray:
    """Fractional timestep index at log σ̄ = u (:func:`index_at_log_sigma_bar`, in NumPy).
    The inverse of :func:`alpha_bar_at` on [0, T-1]."""
    t = index_at_log_sigma_bar(log_sigma_bar_table(sched, "cpu"), torch.as_tensor(np.asarray(u, dtype=np.float64)))
    return t.numpy()


def alpha_bar_at(sched: Schedule, t: np.ndarray | float) -> np.ndarray:
    """ᾱ at a fractional index t ∈ [0, T-1], interpolating log σ̄ linearly (exact at integers):
    ᾱ = 1/(1 + σ̄²) of :func:`log_sigma_bar_at`, in NumPy."""
    u = log_sigma_bar_at(log_sigma_bar_table(sched, "cpu"), torch.as_tensor(np.asarray(t, dtype=np.float64)))
    return torch.sigmoid(-2.0 * u).numpy()

"""Likelihoods: the variational bound of Ho et al. 2020 (eq. 5) and the exact log-likelihood
of the probability-flow ODE (instantaneous change of variables).

Both work in the network's (standardised) units and, given a Normalizer, add its Jacobian
so the result is in data units: log p_x(x) = log p_z(z) + log|∂z/∂x|.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import diffusion as dif
from . import ode as pf_ode
from .schedule import Schedule

LOG2 = math.log(2.0)
DECODERS = ("gaussian", "discretized")


def gaussian_kl(mean1, var1, mean2, var2) -> torch.Tensor:
    """KL(N(mean1, var1 I) ‖ N(mean2, var2 I)) summed over dimensions: (B, ...) → (B,).
    ½ Σ [log(var2/var1) + var1/var2 + (mean1-mean2)²/var2 - 1]."""
    var1, var2 = torch.broadcast_to(var1, mean1.shape), torch.broadcast_to(var2, mean1.shape)
    return 0.5 * dif.sum_flat(torch.log(var2 / var1) + var1 / var2 + (mean1 - mean2) ** 2 / var2 - 1.0)


def gaussian_log_density(x, mean, var) -> torch.Tensor:
    """log N(x; mean, var I) summed over dimensions: (B, ...) → (B,)."""
    var = torch.broadcast_to(var, x.shape)
    return -0.5 * dif.sum_flat(math.log(2 * math.pi) + torch.log(var) + (x - mean) ** 2 / var)


def discretized_gaussian_log_likelihood(x, mean, var, bin_width: float = 2.0 / 255) -> torch.Tensor:
    """Ho et al. 2020, eq. 13: the log-probability of the bin of x (8-bit data scaled to
    [-1, 1]) under N(mean, var), with the edge bins reaching ±∞. (B, ...) → (B,)."""
    std = torch.broadcast_to(var, x.shape).sqrt()
    normal = torch.distributions.Normal(mean, std)
    upper = torch.where(x > 1 - 1e-3, torch.ones_like(x), normal.cdf(x + bin_width / 2))
    lower = torch.where(x < -1 + 1e-3, torch.zeros_like(x), normal.cdf(x - bin_width / 2))
    return dif.sum_flat(torch.log((upper - lower).clamp(min=1e-12)))


@torch.no_grad()
def variational_bound(model, sched: Schedule, x0: torch.Tensor, *, prediction: str = "eps",
                      variance: str = "beta", decoder: str = "gaussian", log_det_jacobian: float = 0.0,
                      generator=None, cond=None) -> dict[str, torch.Tensor]:
    """The bound L = L_T + Σ_{t≥2} L_{t-1} + L_0 ≥ -log p_θ(x_0) (Ho et al. 2020, eq. 5), per
    example, in nats (a single x_t per step: unbiased for the expectation over q).

    L_T = KL(q(x_T|x_0) ‖ N(0, I)); L_{t-1} = KL(q(x_{t-1}|x_t,x_0) ‖ p_θ(x_{t-1}|x_t));
    L_0 = -log p_θ(x_0|x_1), a Gaussian N(μ_θ(x_1), σ_1²) for continuous data or the
    discretised decoder (eq. 13) for 8-bit images in [-1, 1]. For σ² = β̃, σ_1² := β̃_2 (as β̃_1 = 0).
    ``log_det_jacobian``: log|∂x_net/∂x| per example, added to turn nats into data units.
    Returns {"prior", "diffusion", "decoder", "total"}, each (B,) float64; total in data units.
    """
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; allowed: {', '.join(DECODERS)}")
    x0 = x0.double()
    B, T = x0.shape[0], sched.T
    sched = sched.to(x0.device)
    var_table = dif.loss_variance_table(sched, variance)
    mean_T, var_T = dif.q_mean_variance(sched, x0, torch.full((B,), T - 1, dtype=torch.long, device=x0.device))
    prior = gaussian_kl(mean_T, var_T, torch.zeros_like(x0), torch.ones_like(var_T))
    diffusion = torch.zeros(B, dtype=torch.float64, device=x0.device)
    decoder_nll = torch.zeros_like(diffusion)
    for i in range(T):
        t = torch.full((B,), i, dtype=torch.long, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device) if generator is not None \
            else torch.randn_like(x0)
        xt = dif.q_sample(sched, x0, t, noise)
        out = model(xt.float(), t, cond).double()
        mean, _, _ = dif.p_mean_variance(sched, out, xt, t, prediction=prediction, variance=variance)
        var = sched.at(var_table, t, xt)
        if i == 0:
            if decoder == "gaussian":
                decoder_nll = -gaussian_log_density(x0, mean, var)
            else:
                decoder_nll = -discretized_gaussian_log_likelihood(x0, mean, var)
        else:
            post_mean, post_var = dif.q_posterior_mean_variance(sched, x0, xt, t)
            diffusion = diffusion + gaussian_kl(post_mean, post_var, mean, var)
    total = prior + diffusion + decoder_nll - log_det_jacobian
    return {"prior": prior, "diffusion": diffusion, "decoder": decoder_nll, "total": total}


def ode_log_likelihood(model, sched: Schedule, x: torch.Tensor, *, prediction: str = "eps",
                       exact_divergence: bool | None = None, probes: int = 1, rtol: float = 1e-5,
                       atol: float = 1e-5, log_det_jacobian: float = 0.0, seed: int = 0,
                       cond=None, method: str = pf_ode.DEFAULT_METHOD, steps: int | None = None) -> dict[str, object]:
    """log p(x) under the probability-flow ODE (Chen et al. 2018; Song et al. 2021, score SDE,
    eq. 39), x: (B, ...) standardised data taken as the state at index 0; see ``ode.log_likelihood``.

    The divergence is exact when ``exact_divergence`` (default for D <= ode.EXACT_MAX_DIM),
    else Hutchinson's estimator with ``probes`` Rademacher vectors fixed along the path.
    ``method``/``steps``: the solver (fixed-step RK4 on ``ode.default_steps`` steps by default);
    ``rtol``/``atol`` apply to the adaptive ``dopri5``.
    Returns {"log_prob": (B,) float64 in data units, "nfe": int, "estimator": str}.
    """
    D = int(np.prod(x.shape[1:]))
    if exact_divergence is None:
        exact_divergence = D <= pf_ode.EXACT_MAX_DIM
    res = pf_ode.log_likelihood(model, sched, x.double(), prediction=prediction, cond=cond, rtol=rtol, atol=atol,
                                method=method, steps=steps, probes=probes, seed=seed,
                                divergence="exact" if exact_divergence else "hutchinson")
    return {"log_prob": res.log_prob.cpu() + log_det_jacobian, "nfe": res.nfe, "estimator": res.divergence}


def nats_to_bits_per_dim(nats: float, dim: int) -> float:
    """bits/dim = nats / (D ln 2)."""
    return nats / (dim * LOG2)

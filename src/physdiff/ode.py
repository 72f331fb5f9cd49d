"""The probability-flow ODE of a discrete-time diffusion model, in torch on the model's device.

With ᾱ the schedule's cumulative product, σ̄² = (1-ᾱ)/ᾱ and u = log σ̄ (increasing with the
timestep index), the deterministic process that has the same marginals as the forward chain is
DDIM's ODE dx̄/dσ̄ = ε̂(x, t) for x̄ = x/√ᾱ (Song et al. 2021, DDIM eq. 14); written for x it is

    dx/du = f(x, u) = -(1-ᾱ(u)) x + √(1-ᾱ(u)) ε̂(x, t(u)),

t(u) the fractional timestep index at u (log σ̄ interpolated linearly between indices,
``schedule.index_at_log_sigma_bar``; ε̂ from the network's ε, x₀ or v by ``denoiser.py``). Along a
solution the log-density obeys the instantaneous change of variables d log p(x(u))/du = -∇·f
(Chen et al. 2018, thm. 1), with ∇·f = -(1-ᾱ) D + √(1-ᾱ) ∇·ε̂. Sampling integrates (x, log p)
from the prior N(0, I) at index T-1 down to index 0; the likelihood integrates the same system
upwards from the data.

The divergence is exact (the trace of the Jacobian) up to ``EXACT_MAX_DIM`` dimensions and
Hutchinson's estimator above (Grathwohl et al. 2019); only the exact one is fit for an
acceptance ratio or an importance weight. The exact one follows a protocol
(:func:`network_divergence`): a network that knows its own divergence supplies it through
``output_and_divergence(x, t, cond) -> (out, tr ∂out/∂x)``; for any other network autograd's
trace (:func:`exact_divergence`, D backward passes) is the default. ∇·f follows from the network's
divergence exactly, through the affine conversion of its output to ε̂.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import denoiser as dn
from . import diffusion as dif
from . import seeding
from .denoiser import Denoiser
from .errors import PhysdiffError
from .schedule import Schedule

EXACT_MAX_DIM = 256
METHODS = ("rk4", "dopri5", "midpoint", "euler")
# Default solver: RK4 (3/8 rule) on equal steps in u = log σ̄, 4 evaluations a step. The step count
# depends on the parametrisation (benchmarks/README.md, bench_ode.py, default spiral runs, bits/dim
# against dopri5 at 1e-7): a v-predicting network gives a smooth drift, 12 steps (48 evaluations)
# are within 0.3%; an ε-predicting one is stiffer near the data (12 steps: +2.0%, 18: +0.4%), so
# eps and x0 get 18 steps (72 evaluations). Use dopri5 to check a run.
DEFAULT_METHOD = "rk4"
DEFAULT_STEPS = {"eps": 18, "x0": 18, "v": 12}
EVALUATIONS_PER_STEP = {"rk4": 4, "midpoint": 2, "euler": 1}  # torchdiffeq's fixed-grid methods
DIVERGENCE_CHUNK = 64  # the exact divergence reports its progress every this many backward passes


def default_steps(prediction: str) -> int:
    """The default number of fixed steps for a network predicting ``prediction``."""
    return DEFAULT_STEPS.get(prediction, max(DEFAULT_STEPS.values()))


@dataclass(frozen=True)
class ODEResult:
    """x: (B, ...) the state at the end; log_prob: (B,) float64 nats, log p of that state
    under the flow (network units) or None; nfe: evaluations of the right-hand side (with
    the exact divergence each is one forward pass and D vector-Jacobian products)."""

    x: torch.Tensor
    log_prob: torch.Tensor | None
    nfe: int
    divergence: str


class Drift:
    """f(u, x) of the probability-flow ODE for a model callable ``model(x, t, cond)`` predicting
    ``prediction`` (eps, x0 or v), turned into ε̂ by ``denoiser.Denoiser`` at the fractional
    index t(u). All tables live on ``device``; no host synchronisation."""

    def __init__(self, model, sched: Schedule, prediction: str, cond=None, device=None):
        self.model, self.prediction, self.cond = model, prediction, cond
        device = device or sched.betas.device
        self.denoiser = Denoiser(model, sched, prediction, device=device)
        self.u_table = self.denoiser.u_table

    def time_index(self, u: torch.Tensor) -> torch.Tensor:
        """Fractional index t(u) by linear interpolation of log σ̄ between integer indices."""
        return self.denoiser.time_index(u)

    def epsilon(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ε̂(x, t(u)) for any parametrisation: x̂₀ and ε̂ are affine in the output at fixed x."""
        return self.denoiser.at_log_sigma_bar(x, u, self.cond).eps

    def __call__(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ab = torch.sigmoid(-2.0 * u.to(x.dtype))
        return -(1.0 - ab) * x + (1.0 - ab).sqrt() * self.epsilon(u, x)

    def with_divergence(self, u: torch.Tensor, x: torch.Tensor, on_chunk=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(u, x), ∇·f (B,) float64), exactly: the network's divergence (:func:`network_divergence`:
        its own when it provides one, else autograd's trace) through the affine conversion to ε̂
        (``denoiser.epsilon_divergence``), then ∇·f = -(1-ᾱ) D + √(1-ᾱ) ∇·ε̂. ``on_chunk(j, D)``:
        called as autograd's trace goes (:func:`exact_divergence`)."""
        t = self.time_index(u).to(x.dtype).expand(x.shape[0])
        out, trace = network_divergence(self.model, x, t, self.cond, on_chunk)
        pred = self.denoiser.wrap(out, x, u)
        ab = torch.sigmoid(-2.0 * u.to(x.dtype))
        f = -(1.0 - ab) * x + (1.0 - ab).sqrt() * pred.eps
        D = x[0].numel()
        ab64 = torch.sigmoid(-2.0 * u.double())
        a64, s64 = ab64.sqrt(), (1.0 - ab64).sqrt()
        div_eps = dn.epsilon_divergence(trace.double(), D, a64, s64, self.prediction)
        return f, -(1.0 - ab64) * D + s64 * div_eps


def network_divergence(net, x: torch.Tensor, t: torch.Tensor, cond=None,
                       on_chunk=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(net(x, t, cond), tr ∂net/∂x per example (B,) float64), exactly.

    The divergence protocol: a network (or a wrapper around one) that knows its own divergence
    provides ``output_and_divergence(x, t, cond) -> (out, trace)`` with the same meaning; every
    other network gets autograd's trace (:func:`exact_divergence`, D backward passes, reporting
    to ``on_chunk``)."""
    own = getattr(net, "output_and_divergence", None)
    if own is not None:
        return own(x, t, cond)
    return exact_divergence(lambda z: net(z, t, cond), x, on_chunk)


def exact_divergence(fn, x: torch.Tensor, on_chunk=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(x), tr ∂fn/∂x) per example, exactly. x: (B, *shape) → ((B, *shape), (B,) float64).

    The trace is Σ_j e_jᵀ J e_j: one forward pass, then one vector-Jacobian product per
    dimension j with the cotangent e_j for every example at once (rows of a per-example
    network do not mix), keeping component j of each: D backward passes of the batch. (Batching
    the D products with ``is_grads_batched`` measured no faster on CPU; this works for any
    network, an analytic denoiser's Python control flow included.) ``on_chunk(j, D)`` is called
    every ``DIVERGENCE_CHUNK`` passes (a counter only: no host synchronisation), so that a long
    trace reports its progress (``progress.pulse``).
    """
    B, D = x.shape[0], x[0].numel()
    with torch.enable_grad():
        xs = x.detach().requires_grad_(True)
        out = fn(xs)
        flat_out = out.reshape(B, D)
        eye = torch.eye(D, dtype=flat_out.dtype, device=x.device)
        trace = torch.zeros(B, dtype=torch.float64, device=x.device)
        if not flat_out.requires_grad:  # the output does not depend on x (a constant network)
            return out.detach(), trace
        for j in range(D):
            grad, = torch.autograd.grad(flat_out, xs, grad_outputs=eye[j].expand(B, D), retain_graph=j < D - 1,
                                        allow_unused=True)
            if grad is not None:
                trace = trace + grad.reshape(B, D)[:, j].double()
            if on_chunk is not None and (j + 1) % DIVERGENCE_CHUNK == 0:
                on_chunk(j + 1, D)
    return out.detach(), trace


def hutchinson_divergence(fn, x: torch.Tensor, probes: torch.Tensor,
                          on_chunk=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(x), unbiased estimate of tr ∂fn/∂x): mean over Rademacher ``probes`` (P, B, *shape)
    of vᵀ J v (Hutchinson 1989). Noisy: never for an acceptance ratio. ``on_chunk(p, P)``: called
    after each probe."""
    with torch.enable_grad():
        xs = x.detach().requires_grad_(True)
        out = fn(xs)
        est = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for p, v in enumerate(probes):
            grad, = torch.autograd.grad(out, xs, grad_outputs=v, retain_graph=p < len(probes) - 1)
            est = est + dif.sum_flat(grad * v).double() / len(probes)
            if on_chunk is not None:
                on_chunk(p + 1, len(probes))
    return out.detach(), est


def integrate(model, sched: Schedule, x: torch.Tensor, *, direction: str, prediction: str = "eps", cond=None,
              log_prob: bool = False, method: str = DEFAULT_METHOD, rtol: float = 1e-5, atol: float = 1e-5,
              steps: int | None = None, divergence: str = "auto", probes: int = 1, seed: int = 0,
              log_prob_start: torch.Tensor | None = None) -> ODEResult:
    """Integrate the probability-flow ODE over the whole schedule.

    ``direction``: "sample" (index T-1 → 0) or "encode" (index 0 → T-1). With ``log_prob`` the
    state is augmented by ℓ, dℓ/du = -∇·f, started at ``log_prob_start`` (default 0), so ℓ at
    the end is log p(end) - log p(start) + start value. ``method``: a fixed-step torchdiffeq
    method on ``steps`` equal steps in u (default ``default_steps(prediction)``; rk4: 4 evaluations
    a step) or the adaptive ``dopri5`` (rtol/atol); the ℓ of a fixed-step solve is the
    discretised integral of the same trajectory, so its tolerance is the solver's.
    ``divergence``: exact, hutchinson or auto (exact up to EXACT_MAX_DIM dimensions).

    Progress: every evaluation of the right-hand side, and every ``DIVERGENCE_CHUNK`` backward
    passes of the exact divergence (or every probe of Hutchinson's), reports to the innermost
    open progress bar (``progress.pulse``: counters only, no host synchronisation), so that a
    solve of one large batch that outlasts the progress interval still reports within it.
    """
    from torchdiffeq import odeint

    from .progress import pulse

    if method not in METHODS:
        raise PhysdiffError(f"unknown ODE method {method!r}; allowed: {', '.join(METHODS)}")
    if direction not in ("sample", "encode"):
        raise PhysdiffError(f"unknown direction {direction!r}; allowed: sample, encode")
    D = x[0].numel()
    if divergence == "auto":
        divergence = "exact" if D <= EXACT_MAX_DIM else "hutchinson"
    if divergence not in ("exact", "hutchinson"):
        raise PhysdiffError(f"unknown divergence {divergence!r}; allowed: auto, exact, hutchinson")
    if steps is not None and not (isinstance(steps, int) and steps >= 1):
        raise PhysdiffError(f"steps = {steps!r} is not allowed; allowed: an integer >= 1")
    drift = Drift(model, sched, prediction, cond, device=x.device)
    u = drift.u_table
    u_start, u_end = (u[-1], u[0]) if direction == "sample" else (u[0], u[-1])
    steps = default_steps(prediction) if steps is None else steps
    options = {} if method == "dopri5" else {"step_size": float(abs(u_end - u_start)) / steps}
    span = torch.stack([u_start, u_end])
    nfe = 0
    planned = None if method == "dopri5" else EVALUATIONS_PER_STEP[method] * steps  # dopri5: adaptive
    what = f"ODE evaluation ({x.shape[0]} rows)"

    def within(done, total):  # a chunk of the divergence of evaluation nfe (counted from 1)
        pulse(nfe - 1 + done / total, planned, what)

    if not log_prob:
        def rhs(s, y):
            nonlocal nfe
            nfe += 1
            out = drift(s, y)
            pulse(nfe, planned, what)
            return out

        path = odeint(rhs, x, span, method=method, rtol=rtol, atol=atol, options=options)
        return ODEResult(path[-1], None, nfe, "none")
    g = seeding.generator(seed)
    vs = (torch.randint(0, 2, (probes, *x.shape), generator=g) * 2 - 1).to(x)

    def rhs_aug(s, state):
        nonlocal nfe
        nfe += 1
        y, _ = state
        if divergence == "exact":
            dy, div = drift.with_divergence(s, y, within)
        else:
            dy, div = hutchinson_divergence(lambda z: drift(s, z), y, vs, within)
        pulse(nfe, planned, what)
        return dy, -div.to(y.dtype)

    ell0 = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) if log_prob_start is None \
        else log_prob_start.to(x)
    path_x, path_l = odeint(rhs_aug, (x, ell0), span, method=method, rtol=rtol, atol=atol, options=options)
    name = "exact" if divergence == "exact" else f"hutchinson({probes})"
    return ODEResult(path_x[-1], path_l[-1].double(), nfe, name)


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I) per example: (B, ...) → (B,) float64."""
    D = x[0].numel()
    return -0.5 * dif.sum_flat(x.double() ** 2) - 0.5 * D * math.log(2 * math.pi)


@torch.no_grad()
def sample_with_log_prob(model, sched: Schedule, x_T: torch.Tensor, *, prediction: str = "eps", cond=None,
                         method: str = DEFAULT_METHOD, rtol: float = 1e-5, atol: float = 1e-5,
                         steps: int | None = None, divergence: str = "exact") -> ODEResult:
    """Samples x₀ = Φ(x_T) of the probability-flow ODE together with log q(x₀), the log-density
    of the distribution they were drawn from, accumulated along the same trajectory:
    log q(x₀) = log N(x_T; 0, I) - ∫_{u_T}^{u_0} ∇·f du (network units, nats). The default
    divergence is exact, so the result is a deterministic function of x_T."""
    return integrate(model, sched, x_T, direction="sample", prediction=prediction, cond=cond, log_prob=True,
                     method=method, rtol=rtol, atol=atol, steps=steps, divergence=divergence,
                     log_prob_start=standard_normal_log_prob(x_T))


@torch.no_grad()
def log_likelihood(model, sched: Schedule, x0: torch.Tensor, *, prediction: str = "eps", cond=None,
                   method: str = DEFAULT_METHOD, rtol: float = 1e-5, atol: float = 1e-5,
                   steps: int | None = None, divergence: str = "auto", probes: int = 1, seed: int = 0) -> ODEResult:
    """log p(x₀) under the flow, x₀ taken as the state at index 0 (Song et al. 2021, score
    SDE, eq. 39): integrate (x, ℓ) from x₀ up to index T-1, then
    log p(x₀) = log N(x_T; 0, I) + ∫_{u_0}^{u_T} ∇·f du. Returns ODEResult with x = x_T."""
    res = integrate(model, sched, x0, direction="encode", prediction=prediction, cond=cond, log_prob=True,
                    method=method, rtol=rtol, atol=atol, steps=steps, divergence=divergence, probes=probes,
                    seed=seed)
    # ℓ(u_T) = -∫ ∇·f du, so log p(x₀) = log N(x_T) - ℓ(u_T)
    return ODEResult(res.x, standard_normal_log_prob(res.x) - res.log_prob, res.nfe, res.divergence)

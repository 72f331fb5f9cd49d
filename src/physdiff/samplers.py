"""Samplers: a registry of plain functions with one signature and one result type.

Every sampler is ``fn(model, sched, x_T, *, prediction, variance, clip_x0, cond, generator,
callback, **options) -> SamplerResult`` and is registered in :data:`SAMPLERS` with the options
it takes; :func:`run_sampler` looks it up by name, refuses unknown options and checks their
values. ``model(x, t, cond)`` is any callable returning the network output (ε, x_0 or v, named
by ``prediction``) with the shape of ``x``; ``t`` is a (B,) tensor of timestep indices (see
``schedule.py``). Randomness comes only from ``generator``: a ``torch.Generator`` or an
:class:`IndexedNoise` (sample i's noise depends only on the seed and i, not on the batch it
falls in). ``callback(i, t, x)`` is called after each step with the new state; use it for
trajectories and progress. A sampler ignores the common keywords it has no use for (the
deterministic ones ignore ``generator``, only ``ddpm`` reads ``variance``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import diffusion as dif
from . import ode as pf_ode
from .errors import PhysdiffError
from .schedule import SPACINGS, Schedule, log_sigma_bar, respace, timestep_subsequence


class IndexedNoise:
    """Gaussian noise for samples ``start, start+1, ..., start+count-1`` in which the draws of
    sample i depend only on ``seed`` and i.

    Samples are grouped in fixed blocks of ``block`` indices, each with its own NumPy PCG64
    generator seeded by SeedSequence([seed, block number]); every call to :meth:`randn_like`
    advances all blocks by one draw. So the same seed gives the same sample i whatever the
    batch size, the number of ranks, or the device. (Not torch's CPU generator: it keeps only
    the low 32 bits of a seed, so among 10⁴ blocks two would share a stream with ~1% chance.)
    """

    def __init__(self, seed: int, start: int, count: int, block: int = 64):
        self.start, self.count, self.block = start, count, block
        first, last = start // block, (start + count + block - 1) // block
        self.offset = start - first * block  # any start works: the block is drawn whole, then cut
        self.generators = [np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), j])))
                           for j in range(first, last)]

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.count:
            raise ValueError(f"IndexedNoise for {self.count} samples asked for a batch of {x.shape[0]}")
        draws = np.concatenate([g.standard_normal((self.block, *x.shape[1:])) for g in self.generators])
        return torch.from_numpy(draws[self.offset: self.offset + self.count]).to(device=x.device, dtype=x.dtype)


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

    def output_and_divergence(self, x, t, cond=None):
        """The divergence protocol of ``ode.py``, forwarded (one evaluation)."""
        self.nfe += 1
        return pf_ode.network_divergence(self.model, x, t, cond)


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
        both = self.model(*self._doubled(x, t, cond))
        c, u = both.chunk(2)
        return c + self.w * (c - u)

    def _doubled(self, x, t, cond):
        return torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, torch.full_like(cond, self.null)])

    def output_and_divergence(self, x, t, cond=None):
        """(output, tr ∂output/∂x (B,) float64), the divergence protocol of ``ode.py``: the same
        combination of the conditional and unconditional traces, (1 + w) tr_c − w tr_∅, from the
        wrapped network's protocol or autograd."""
        if cond is None or self.w == 0.0:
            return pf_ode.network_divergence(self.model, x, t, cond)
        both, trace = pf_ode.network_divergence(self.model, *self._doubled(x, t, cond))
        c, u = both.chunk(2)
        tc, tu = trace.chunk(2)
        return c + self.w * (c - u), tc + self.w * (tc - tu)


@dataclass(frozen=True)
class SamplerResult:
    """What every sampler returns. samples: (B, *data_shape) x_0 in network units; nfe: network
    evaluations per batch; log_prob: (B,) float64 log-density (nats, network units) of the
    distribution the samples were drawn from, for samplers that know it exactly, else None."""

    samples: torch.Tensor
    nfe: int
    log_prob: torch.Tensor | None = None


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: its function, one-line summary, options {name: help}, default step
    count and ``exact_density``: whether it returns the exact log-density of the distribution its
    samples were drawn from (``SamplerResult.log_prob``, asked for with option ``log_prob``), fit
    for an acceptance ratio or an importance weight."""

    name: str
    fn: Callable[..., SamplerResult]
    summary: str
    options: dict[str, str] = field(default_factory=dict)
    default_steps: int | None = None  # None: every timestep (or adaptive)
    exact_density: bool = False


SAMPLERS: dict[str, SamplerSpec] = {}
STEP_OPTIONS = {"steps": "K network evaluations",
                "spacing": f"timesteps visited: {', '.join(SPACINGS)}, or fitted (ddim, dpm-solver, unipc: the run's, "
                           "from physdiff fit-steps, which are used when no spacing is given)",
                "timesteps": "the K visited indices themselves, distinct, the largest T-1 (in place of spacing)"}


def register(name: str, summary: str, options: dict[str, str], default_steps: int | None = None, *,
             exact_density: bool = False):
    """Decorator adding a sampler function to :data:`SAMPLERS`."""

    def add(fn):
        SAMPLERS[name] = SamplerSpec(name, fn, summary, options, default_steps, exact_density)
        return fn

    return add


def density_sampler() -> SamplerSpec:
    """The default sampler for callers that need an exact log-density: the first registered
    sampler that declares ``exact_density`` (the probability-flow ODE)."""
    for spec in SAMPLERS.values():
        if spec.exact_density:
            return spec
    raise PhysdiffError("no registered sampler returns an exact log-density")


def density_names() -> tuple[str, ...]:
    """The registered samplers that return an exact log-density."""
    return tuple(name for name, spec in SAMPLERS.items() if spec.exact_density)


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        import difflib

        close = difflib.get_close_matches(str(name), list(SAMPLERS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PhysdiffError(f"unknown sampler {name!r}{hint}; allowed: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def check_options(name: str, options: dict, T: int) -> dict:
    """The options of sampler ``name`` with Nones dropped, validated against a schedule of T
    steps; unknown names and values out of range raise PhysdiffError."""
    spec = get_sampler(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise PhysdiffError(f"sampler {name!r} takes no option {unknown[0]!r}; its options: {allowed}")
    if "timesteps" in options:
        options["timesteps"] = check_timesteps(options["timesteps"], T, options.get("steps"))
        options["steps"] = len(options["timesteps"])
        if "spacing" in options:
            raise PhysdiffError("give either timesteps or spacing, not both")
    steps = options.get("steps")
    if steps is not None and not (isinstance(steps, int) and 1 <= steps <= T):
        raise PhysdiffError(f"steps = {steps!r} is out of range for a run with T = {T}; allowed: 1..{T}")
    if "eta" in options and not 0.0 <= float(options["eta"]) <= 1.0:
        raise PhysdiffError(f"eta = {options['eta']!r} is out of range; allowed: 0 <= eta <= 1")
    if "spacing" in options and options["spacing"] not in SPACINGS:
        raise PhysdiffError(f"unknown spacing {options['spacing']!r}; allowed: {', '.join(SPACINGS)}")
    orders = ORDER_CHOICES.get(name, (2, 3))
    if "order" in options and options["order"] not in orders:
        raise PhysdiffError(f"order = {options['order']!r} is not available for {name}; allowed: "
                            f"{', '.join(map(str, orders))}")
    variants = VARIANT_CHOICES.get(name, UNIPC_VARIANTS)
    if "variant" in options and options["variant"] not in variants:
        shown = "UniPC" if name == "unipc" else name
        raise PhysdiffError(f"unknown {shown} variant {options['variant']!r}; allowed: {', '.join(variants)}")
    if "method" in options and options["method"] not in pf_ode.METHODS:
        raise PhysdiffError(f"unknown ODE method {options['method']!r}; allowed: {', '.join(pf_ode.METHODS)}")
    for tol in ("rtol", "atol"):
        if tol in options and not float(options[tol]) > 0:
            raise PhysdiffError(f"{tol} = {options[tol]!r} must be > 0")
    if spec.default_steps is not None and "steps" not in options:
        options["steps"] = min(spec.default_steps, T)
    return options


def check_timesteps(timesteps, T: int, steps: int | None = None) -> list[int]:
    """Explicit visited indices as an ascending list: distinct integers in 0..T-1 whose largest
    is T-1 (x_T is drawn there), as many as ``steps`` when that is given; else PhysdiffError."""
    try:
        taus = sorted(int(t) for t in timesteps)
        if any(int(t) != t for t in timesteps):
            raise ValueError
    except (TypeError, ValueError):
        raise PhysdiffError(f"timesteps must be integer indices in 0..{T - 1}, got {timesteps!r}") from None
    if not taus or len(set(taus)) != len(taus) or taus[0] < 0 or taus[-1] != T - 1:
        raise PhysdiffError(f"timesteps must be distinct indices in 0..{T - 1} with the largest T-1 = {T - 1} "
                            f"(where x_T is drawn), got {taus}")
    if steps is not None and steps != len(taus):
        raise PhysdiffError(f"steps = {steps} but {len(taus)} timesteps were given; give one or make them agree")
    return taus


def run_sampler(name: str, model, sched: Schedule, x_T: torch.Tensor, *, prediction: str = "eps",
                variance: str = "beta", clip_x0: float | None = None, cond=None, generator=None, callback=None,
                **options) -> SamplerResult:
    """Run the registered sampler ``name`` with validated ``options`` (see :func:`check_options`)."""
    options = check_options(name, options, sched.T)
    return SAMPLERS[name].fn(model, sched, x_T, prediction=prediction, variance=variance, clip_x0=clip_x0,
                             cond=cond, generator=generator, callback=callback, **options)


def _visited_timesteps(sched: Schedule, steps: int | None, spacing: str, timesteps=None) -> list[int]:
    """Ascending indices a K-step sampler visits: ``timesteps`` when given, else K of
    ``spacing``, or all T when ``steps`` is None."""
    if timesteps is not None:
        return check_timesteps(timesteps, sched.T, steps)
    return list(range(sched.T)) if steps is None else timestep_subsequence(sched.T, steps, spacing, sched)


def _timestep(i: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)


def _respaced_loop(model, sched: Schedule, x_T: torch.Tensor, steps, spacing, update, cond, callback,
                   timesteps=None) -> SamplerResult:
    """The loop shared by ancestral DDPM and DDIM: visit the K indices τ_K > ... > τ_1 on the
    respaced schedule; ``update(sub, out, x, t_sub, k)`` returns the state at the next index
    from the network output at τ_k. ``callback`` gets the paper step of the new state."""
    taus = _visited_timesteps(sched, steps, spacing, timesteps)
    sub = (sched if len(taus) == sched.T else respace(sched, taus)).to(x_T.device)
    x = x_T
    for k in reversed(range(len(taus))):
        t_sub, t_model = _timestep(k, x), _timestep(taus[k], x)
        x = update(sub, model(x, t_model, cond), x, t_sub, k)
        if callback is not None:
            callback(taus[k - 1] + 1 if k > 0 else 0, t_model, x)
    return SamplerResult(x, len(taus))


@register("ddpm", "ancestral, Ho et al. 2020 Alg. 2; any K-step subset with the respaced schedule", STEP_OPTIONS)
@torch.no_grad()
def ddpm_sample(model, sched: Schedule, x_T: torch.Tensor, *, steps: int | None = None,
                spacing: str = "uniform", timesteps=None, prediction: str = "eps", variance: str = "beta",
                clip_x0: float | None = None, cond=None, generator=None, callback=None) -> SamplerResult:
    """Ancestral sampling, Ho et al. 2020 Algorithm 2:
    x_{t-1} = μ_θ(x_t, t) + σ_t z, z ~ N(0, I) for t > 1 and z = 0 at the last step.

    ``steps``: visit only K timesteps (``spacing`` as in timestep_subsequence) with the
    respaced schedule of Nichol & Dhariwal 2021, sec. 4; None = all T.
    x_T: (B, *data_shape) standard normal. Returns x_0 of the same shape. NFE = K.
    ``callback(i, t, x)`` gets the paper step i of the new state x_i (original indexing).
    """

    def update(sub, out, x, t_sub, k):
        mean, var, _ = dif.p_mean_variance(sub, out, x, t_sub, prediction=prediction, variance=variance,
                                           clip_x0=clip_x0)
        return mean + var.sqrt() * randn_like(x, generator) if k > 0 else mean

    return _respaced_loop(model, sched, x_T, steps, spacing, update, cond, callback, timesteps)


@register("ddim", "Song et al. 2021 eq. 12; eta = 0 deterministic, eta = 1 equals DDPM with σ² = β̃",
          STEP_OPTIONS | {"eta": "DDIM η in [0, 1]"})
@torch.no_grad()
def ddim_sample(model, sched: Schedule, x_T: torch.Tensor, *, steps: int | None = None,
                spacing: str = "uniform", eta: float = 0.0, timesteps=None, prediction: str = "eps",
                variance: str = "beta",
                clip_x0: float | None = None, cond=None, generator=None, callback=None) -> SamplerResult:
    """DDIM (Song et al. 2021, eq. 12) on K timesteps: η = 0 deterministic, η = 1 equal to
    ancestral DDPM with σ² = β̃ (``variance`` is not used). NFE = K."""

    def update(sub, out, x, t_sub, k):
        x0_hat, eps_hat = dif.split_prediction(sub, out, x, t_sub, prediction, clip_x0)
        noise = randn_like(x, generator) if eta > 0 and k > 0 else None
        return dif.ddim_step(sub, x0_hat, eps_hat, t_sub, eta=eta if k > 0 else 0.0, noise=noise)

    return _respaced_loop(model, sched, x_T, steps, spacing, update, cond, callback, timesteps)


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


def _data_prediction_loop(model, sched: Schedule, x_T: torch.Tensor, steps: int, spacing: str, prediction: str,
                          clip_x0, cond, callback, step, timesteps=None) -> SamplerResult:
    """The loop shared by the data-prediction multistep solvers (DPM-Solver++, its SDE variant,
    UniPC): visit K indices τ_K > ... > τ_1 = 0 of ``spacing``, the network's x̂_0 at each;
    ``step(sched, x, x0_hat, t, nxt, lam_t, lam_next)`` returns the state at the next index
    (λ = log(α/σ) as floats); the last point returns x̂_0. NFE = K. ``callback`` gets the paper
    step of each new state."""
    taus = _visited_timesteps(sched, steps, spacing, timesteps)[::-1]  # descending
    sched = sched.to(x_T.device)
    lam = (-torch.from_numpy(log_sigma_bar(sched))).tolist()
    x = x_T
    for k, tau in enumerate(taus):
        t = _timestep(tau, x)
        x0_hat, _ = dif.split_prediction(sched, model(x, t, cond), x, t, prediction, clip_x0)
        if k == len(taus) - 1:
            x = x0_hat
            if callback is not None:
                callback(0, t, x)
            break
        x = step(sched, x, x0_hat, t, _timestep(taus[k + 1], x), lam[tau], lam[taus[k + 1]])
        if callback is not None:
            callback(taus[k + 1] + 1, t, x)
    return SamplerResult(x, len(taus))


def _sigma_ratio(sched: Schedule, t, s, x) -> torch.Tensor:
    """σ_t/σ_s at indices t and s, shaped for x."""
    return sched.at("sqrt_one_minus_alpha_bar", t, x) / sched.at("sqrt_one_minus_alpha_bar", s, x)


ORDER_HELP = ("multistep order: dpm-solver 2 = DPM-Solver++(2M) (default) or 3 = (3M); "
              "unipc 1, 2 or 3, the predictor's order (its corrector adds one; default 3 from 15 steps, else 2); "
              "sde-dpm-solver 1 or 2 (default)")
UNIPC_THIRD_ORDER_FROM = 15  # unipc's default order: 3 from this many steps, 2 below (benchmarks/README.md)


def unipc_default_order(steps: int) -> int:
    """unipc's order when none is given: 3 from :data:`UNIPC_THIRD_ORDER_FROM` steps, else 2."""
    return 3 if steps >= UNIPC_THIRD_ORDER_FROM else 2


ORDER_CHOICES = {"dpm-solver": (2, 3), "unipc": (1, 2, 3), "sde-dpm-solver": (1, 2)}
DPM_VARIANTS = ("reference", "taylor")
DPM_OPTIONS = STEP_OPTIONS | {"order": ORDER_HELP,
                              "variant": "dpm-solver order 3: reference (default; the coefficients of the authors' "
                                         "code, diffusers and k-diffusion, whose second-difference term has half the "
                                         "weight a third-order step needs) or taylor (that term weighted so that a "
                                         "step is exact for x̂₀ quadratic in λ)"}


def _dpm_update(x, m0, hist, h: float, alpha_t, sigma_ratio, order: int, variant: str = "reference"):
    """One DPM-Solver++ step from the state x at λ_s to λ_s + h (see :func:`dpm_solver_sample`):
    ``m0`` the data prediction at λ_s, ``hist`` [(x̂₀ at a previous point, the step from it to the
    next point), ...] (oldest first), ``alpha_t`` = α at the new point, ``sigma_ratio`` σ_t/σ_s.
    With x̂₀(λ_s + u) = m0 + u m' + ½u² m'', the exact step (DPM-Solver++ eq. 9) is
    x_t = (σ_t/σ_s) x + α_t[(1 − e^{−h}) m0 + (h − 1 + e^{−h}) m' + ½(h² − 2h + 2(1 − e^{−h})) m''];
    the multistep differences give D1 = h m' and D2 = ½h² m'' exactly for a quadratic, so the
    "taylor" D2 coefficient 2(½ − (e^{−h} − 1 + h)/h²) makes order 3 exact for quadratic x̂₀
    (tested); "reference" (the authors' code) has half of it, exact for linear x̂₀ only."""
    em1 = math.expm1(-h)  # e^{-h} − 1
    if not hist:
        d = -em1 * m0
    elif order == 2 or len(hist) == 1:
        (m1, h0), = hist[-1:]
        d = -em1 * m0 - 0.5 * em1 * (m0 - m1) / (h0 / h)
    else:
        (m2, h1), (m1, h0) = hist[-2:]
        r0, r1 = h0 / h, h1 / h
        d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        w2 = 2.0 if variant == "taylor" else 1.0
        d = -em1 * m0 + (em1 / h + 1) * d1 - w2 * ((em1 + h) / h**2 - 0.5) * d2
    return sigma_ratio * x + alpha_t * d


@register("dpm-solver", "DPM-Solver++(2M) or (3M), Lu et al. 2022, data prediction, first-order last step",
          DPM_OPTIONS, default_steps=20)
@torch.no_grad()
def dpm_solver_sample(model, sched: Schedule, x_T: torch.Tensor, *, steps: int = 20,
                      spacing: str = "logsnr", order: int = 2, variant: str | None = None, timesteps=None,
                      prediction: str = "eps",
                      variance: str = "beta", clip_x0: float | None = None, cond=None, generator=None,
                      callback=None) -> SamplerResult:
    """DPM-Solver++(2M) and (3M), Lu et al. 2022 ("DPM-Solver++", Algorithm 2 and its third-order
    multistep extension), for a discrete-time model.

    With α = √ᾱ, σ = √(1-ᾱ), λ = log(α/σ), h = λ_t − λ_{s0} and the data predictions
    m0, m1, m2 = x̂_0 at the current and the two previous points (r0 = h_0/h, r1 = h_1/h, h_0 and
    h_1 the previous steps):

        x_t = (σ_t/σ_{s0}) x − α_t(e^{-h} − 1) D0 + [2M, midpoint form: −½ α_t(e^{-h} − 1) D1]
              [3M: + α_t((e^{-h} − 1)/h + 1) D1 − 2α_t((e^{-h} − 1 + h)/h² − ½) D2]

    D0 = m0; 2M: D1 = (m0 − m1)/r0; 3M: D1_0 = (m0 − m1)/r0, D1_1 = (m1 − m2)/r1,
    D1 = D1_0 + r0/(r0 + r1) (D1_0 − D1_1), D2 = (D1_0 − D1_1)/(r0 + r1) (:func:`_dpm_update`), as
    in the authors' code, diffusers and k-diffusion (``variant`` None or "reference"). With these
    D1, D2 a step is exact for a data prediction quadratic in λ only with a factor 2 on the D2 term
    (``variant="taylor"``, tested against quadrature); the reference step is exact for linear x̂₀.
    Measured with exact denoisers (benchmarks/README.md): the two agree from 20 NFE, and below it
    the reference is the better one on three of four densities, so it stays the default. The first steps use the
    orders the history allows (1, then 2). The last step, to σ = 0, is first order (it returns
    x̂_0), as in the solver's "lower order final". Deterministic (``generator`` and ``variance``
    unused); NFE = K. Default spacing: uniform in λ, which the step-size ratios r need (with
    uniform t the last step spans a large λ range and 2M overshoots).
    """
    if order not in ORDER_CHOICES["dpm-solver"]:
        raise PhysdiffError(f"dpm-solver order must be 2 or 3 (got {order})")
    if variant is not None and variant not in DPM_VARIANTS:
        raise PhysdiffError(f"unknown dpm-solver variant {variant!r}; allowed: {', '.join(DPM_VARIANTS)}")
    if variant is not None and order != 3:
        raise PhysdiffError(f"dpm-solver variant {variant!r} is a third-order coefficient: give it with order 3")
    variant = variant or "reference"
    hist = []  # (x̂_0 at a previous point, the step h from it to the next point), newest last

    def step(sched, x, x0_hat, t, nxt, lam_t, lam_next):
        nonlocal hist
        h = lam_next - lam_t
        out = _dpm_update(x, x0_hat, hist, h, sched.at("sqrt_alpha_bar", nxt, x), _sigma_ratio(sched, nxt, t, x),
                          order, variant)
        hist = [*hist[-1:], (x0_hat, h)]
        return out

    return _data_prediction_loop(model, sched, x_T, steps, spacing, prediction, clip_x0, cond, callback, step,
                                 timesteps)


@register("sde-dpm-solver", "SDE-DPM-Solver++(2M), Lu et al. 2022: the stochastic multistep solver, data prediction",
          STEP_OPTIONS | {"order": ORDER_HELP}, default_steps=20)
@torch.no_grad()
def sde_dpm_solver_sample(model, sched: Schedule, x_T: torch.Tensor, *, steps: int = 20, spacing: str = "logsnr",
                          order: int = 2, timesteps=None, prediction: str = "eps", variance: str = "beta",
                          clip_x0: float | None = None, cond=None, generator=None, callback=None) -> SamplerResult:
    """SDE-DPM-Solver++ (Lu et al. 2022, "DPM-Solver++", sec. 5 and its appendix; the authors'
    "sde-dpmsolver++"), the exponential integrator of the reverse SDE in data prediction. From s to
    t with h = λ_t − λ_s, D0 = x̂_0 at s, D1 = (D0 − x̂_0 at the previous point)/r0 (order 2, as
    DPM-Solver++(2M)) and z ~ N(0, I):

        x_t = (σ_t/σ_s) e^{−h} x_s + α_t (1 − e^{−2h}) (D0 + ½ D1) + σ_t √(1 − e^{−2h}) z

    Order 1 is DDIM with η = 1, i.e. ancestral DDPM with σ² = β̃ on the visited steps (tested draw
    for draw). The last point returns x̂_0 without noise. NFE = K; ``variance`` is not used."""
    if order not in ORDER_CHOICES["sde-dpm-solver"]:
        raise PhysdiffError(f"sde-dpm-solver order must be 1 or 2 (got {order})")
    prev = None  # (x̂_0, step h that led to its point) of the previous point

    def step(sched, x, x0_hat, t, nxt, lam_t, lam_next):
        nonlocal prev
        h = lam_next - lam_t
        d = x0_hat if prev is None or order == 1 else x0_hat + 0.5 * (x0_hat - prev[0]) / (prev[1] / h)
        prev = (x0_hat, h)
        one_minus = -math.expm1(-2.0 * h)  # 1 − e^{−2h}
        noise = sched.at("sqrt_one_minus_alpha_bar", nxt, x) * math.sqrt(one_minus) * randn_like(x, generator)
        drift = sched.at("sqrt_alpha_bar", nxt, x) * one_minus * d
        return (_sigma_ratio(sched, nxt, t, x) * math.exp(-h)) * x + drift + noise

    return _data_prediction_loop(model, sched, x_T, steps, spacing, prediction, clip_x0, cond, callback, step,
                                 timesteps)


UNIPC_VARIANTS = ("bh1", "bh2")
VARIANT_CHOICES = {"unipc": UNIPC_VARIANTS, "dpm-solver": DPM_VARIANTS}
UNIPC_OPTIONS = STEP_OPTIONS | {"order": ORDER_HELP,
                                "variant": "UniPC B(h): bh1 (B = h) or bh2 (B = e^h - 1, default)"}


def _unipc_coefficients(rks: list[float], h: float, variant: str) -> tuple[float, float, np.ndarray, np.ndarray]:
    """The data-prediction UniPC coefficients (Zhao et al. 2023, Algorithms 1-3, as in the
    authors' code): with ĥ = −h, φ_1 = e^{ĥ} − 1, B(h) = ĥ (bh1) or φ_1 (bh2), the p × p system
    R_{ik} = r_k^{i-1} and b_i = i! φ_{i+1}(ĥ)/B(h), where φ_{k+1} = φ_k/ĥ − 1/k! (φ_1 as above
    before the recursion's first φ_1/ĥ − 1). ``rks``: the previous points' λ offsets over h,
    with 1 last. Returns (φ_1, B(h), R, b)."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else h_phi_1
    h_phi_k, factorial = h_phi_1 / hh - 1.0, 1.0
    R, b = [], []
    r = np.asarray(rks, dtype=np.float64)
    for i in range(1, len(rks) + 1):
        R.append(r ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return h_phi_1, b_h, np.stack(R), np.asarray(b)


def _unipc_update(x, m0, earlier, lam_s0, lam_t, lam_earlier, alpha_t, sigma_ratio, order, variant, m_t=None):
    """One UniPC update from the point s0 (state x, data prediction m0) to t: the predictor UniP
    of order ``order`` (``m_t`` None) or, given the data prediction ``m_t`` at t, the corrector
    UniC that raises it by one. ``earlier``/``lam_earlier``: the data predictions and λ of the
    order − 1 points before s0, newest first."""
    h = lam_t - lam_s0
    rks = [(lam_i - lam_s0) / h for lam_i in lam_earlier[:order - 1]]
    d1s = [(m_i - m0) / rk for m_i, rk in zip(earlier[:order - 1], rks, strict=True)]
    h_phi_1, b_h, R, b = _unipc_coefficients([*rks, 1.0], h, variant)
    x_t = sigma_ratio * x - alpha_t * h_phi_1 * m0
    if m_t is None:  # predictor: the first order − 1 equations (order 2: ρ = ½, as in the paper)
        rhos = [0.5] if order == 2 else (np.linalg.solve(R[:-1, :-1], b[:-1]) if order > 2 else [])
        res = sum(rho * d for rho, d in zip(rhos, d1s, strict=True))
    else:  # corrector: all p equations, the last column on D1_t = m_t − m0 (order 1: ρ = ½)
        rhos = [0.5] if order == 1 else np.linalg.solve(R, b)
        res = sum(rho * d for rho, d in zip(rhos[:-1], d1s, strict=True)) + rhos[-1] * (m_t - m0)
    return x_t - alpha_t * b_h * res if d1s or m_t is not None else x_t


@register("unipc", "UniPC, Zhao et al. 2023: UniP predictor + UniC corrector, data prediction, no extra NFE",
          UNIPC_OPTIONS, default_steps=20)
@torch.no_grad()
def unipc_sample(model, sched: Schedule, x_T: torch.Tensor, *, steps: int = 20, spacing: str = "logsnr",
                 order: int | None = None, variant: str = "bh2", timesteps=None, prediction: str = "eps",
                 variance: str = "beta",
                 clip_x0: float | None = None, cond=None, generator=None, callback=None) -> SamplerResult:
    """UniPC (Zhao et al. 2023, "UniPC: a unified predictor-corrector framework", Algorithms 1-3,
    data prediction) on K visited indices of a discrete-time model, NFE = K.

    At each visited point the network gives the data prediction m_t at the predicted state x̃_t;
    the corrector UniC-p then recomputes the step s0 → t with m_t as one more node (order p + 1),
    and the predictor UniP-p continues from the corrected state with m_t (the evaluation is
    reused: the corrector costs no NFE). Both use, with h = λ_t − λ_{s0}, r_k = (λ_{s_k} − λ_{s0})/h
    and D_k = (m_{s_k} − m0)/r_k:

        x_t = (σ_t/σ_{s0}) x_{s0} − α_t (e^{−h} − 1) m0 − α_t B(h) Σ_k ρ_k D_k

    with ρ from :func:`_unipc_coefficients` (predictor of order 2: ρ = ½, which makes UniP-2 with
    bh2 DPM-Solver++(2M)). The order ramps up from 1 as history allows; the last point returns
    x̂_0 (first order), as DPM-Solver here. ``order`` 1-3, default (None) 3 from
    :data:`UNIPC_THIRD_ORDER_FROM` steps and 2 below: measured on the default runs of every 2D
    dataset, third order is the better or equal at 20 NFE on all eight and the worse on 5 of 8 at 10 (and, with
    the exact denoiser, scatters below 15). ``variant`` bh1 | bh2 (the paper advises bh1 for
    unconditional sampling below 10 NFE; it is the worse here at every NFE ≤ 15). Deterministic."""
    if order is None:
        order = unipc_default_order(steps)
    if order not in ORDER_CHOICES["unipc"] or variant not in UNIPC_VARIANTS:
        raise PhysdiffError(f"unipc: order must be 1, 2 or 3 and variant bh1 or bh2 (got {order}, {variant!r})")
    ms, lams = [], []  # data predictions and λ of the points so far, newest first
    prev = None  # (state at the previous point, its index, the order used from it)

    def step(sched, x, m_t, t, nxt, lam_t, lam_next):
        nonlocal ms, lams, prev
        if prev is not None:  # correct the step that led here with the new evaluation
            x_prev, s0, p = prev
            x = _unipc_update(x_prev, ms[0], ms[1:], lams[0], lam_t, lams[1:], sched.at("sqrt_alpha_bar", t, x),
                              _sigma_ratio(sched, t, s0, x), p, variant, m_t=m_t)
        ms, lams = [m_t, *ms[:2]], [lam_t, *lams[:2]]
        p = min(order, len(ms))
        prev = (x, t, p)
        return _unipc_update(x, m_t, ms[1:], lam_t, lam_next, lams[1:], sched.at("sqrt_alpha_bar", nxt, x),
                             _sigma_ratio(sched, nxt, t, x), p, variant)

    return _data_prediction_loop(model, sched, x_T, steps, spacing, prediction, clip_x0, cond, callback, step,
                                 timesteps)


ODE_OPTIONS = {"method": f"ODE solver: {', '.join(pf_ode.METHODS)} (default {pf_ode.DEFAULT_METHOD}; "
                         "dopri5 is adaptive)",
               "rtol": "relative tolerance of dopri5 (default 1e-5)", "atol": "absolute tolerance (default 1e-5)",
               "steps": "fixed-step methods: number of steps (default " + ", ".join(
                   f"{k} {v}" for k, v in pf_ode.DEFAULT_STEPS.items()) + " by the run's prediction)",
               "log_prob": "also return the exact log-density of each sample (costs D× per evaluation)"}


@register("ode", "probability-flow ODE in torch (RK4, 12-18 steps by default); exact log-density on request",
          ODE_OPTIONS, exact_density=True)
@torch.no_grad()
def ode_sample(model, sched: Schedule, x_T: torch.Tensor, *, method: str = pf_ode.DEFAULT_METHOD,
               rtol: float = 1e-5, atol: float = 1e-5, steps: int | None = None, log_prob: bool = False,
               prediction: str = "eps",
               variance: str = "beta", clip_x0: float | None = None, cond=None, generator=None,
               callback=None) -> SamplerResult:
    """Integrate the probability-flow ODE (``ode.py``) from index T-1 down to index 0.
    The state at index 0 carries noise √(1-ᾱ_0) ≈ 1e-2 (standardised units), as in Song et al.
    2021 (score SDE), which stop at a small time ε rather than at 0. With ``log_prob`` the
    result carries log q(x_0) of the pushforward of N(0, I), accumulated along the same
    trajectory with the exact divergence. Deterministic; ``clip_x0`` is not applied (it would
    make the flow non-invertible); ``callback`` gets the final state only."""
    kw = {"prediction": prediction, "cond": cond, "method": method, "rtol": rtol, "atol": atol, "steps": steps}
    if log_prob:
        res = pf_ode.sample_with_log_prob(model, sched, x_T, **kw)
    else:
        res = pf_ode.integrate(model, sched, x_T, direction="sample", **kw)
    if callback is not None:
        callback(0, _timestep(0, x_T), res.x)
    return SamplerResult(res.x, res.nfe, res.log_prob)


def sample_with_trajectory(sampler, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``sampler`` and also return its result and every intermediate state, stacked:
    (steps, B, ...)."""
    states = []
    user_cb = kwargs.pop("callback", None)

    def keep(i, t, x):
        states.append(x.detach().cpu())
        if user_cb is not None:
            user_cb(i, t, x)

    out = sampler(*args, callback=keep, **kwargs)
    return out, torch.stack(states)

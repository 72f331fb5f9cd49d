"""A diffusion model made into an exact sampler of e^{−S} with its own density.

The probability-flow ODE maps x_T ~ N(0, I) to x₀ and gives log q(x₀), the log-density of the
distribution x₀ was drawn from, with the exact divergence along the same trajectory (``ode.py``;
never a stochastic trace estimator, whose noise would bias an acceptance ratio). Then

- independence Metropolis–Hastings (Tierney 1994; as used for flows by Albergo, Kanwar &
  Shanahan 2019): from the current state x propose the next model sample y and accept with
  min(1, w(y)/w(x)), w = e^{−S}/q. The chain has e^{−S}/Z as its stationary law whatever the
  model, so its observables are exact up to statistical errors; a poor model shows as a low
  acceptance and a long τ_int.
- importance weights w ∝ e^{−S}/q: Kish's effective sample size and reweighted observables.

:func:`sample_exact` is the whole recipe for a trained run (proposals with log q from the run's
density sampler, the action of the run's theory, the chain and its report), used by
``physdiff sample --metropolis``, the lattice example and the lattice benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import PhysdiffError
from ..progress import pulse
from ..stats import derived, first_non_finite, gamma_method, kish_ess

MAX_WEIGHT_SHARE = 0.1  # a log Z whose largest weight carries more of the sum is flagged unreliable
LOG_Q_CHECK_WARN = 0.5  # a reweighted observable (or log Z) that the solver check moves by more errors is flagged
CHAIN_PULSE = 2**16  # the Metropolis chain reports its progress every this many steps (progress.pulse)
MAX_BURN_IN_FLOOR = 10_000  # a burn-in may be as long as the n kept steps, or this many when n is smaller
PROPOSAL_BYTES_PER_SITE = 24  # memory of one proposal's site: float32 draw, float64 action input and states
# the order p of each solver: a finer solve (twice the fixed steps; for dopri5 16× tighter tolerances,
# whose error scales as the tolerance) leaves about |shift| / (2^p − 1) of the coarse solve's bias
SOLVER_ORDER = {"rk4": 4, "midpoint": 2, "euler": 1, "dopri5": 4}
LOG_Z_CONVENTION = ("log Z of the theory on the L×L torus in lattice units: φ⁴ Z = ∫ Π_x dφ_x e^{−S(φ)}; "
                    "Ising Z = Σ_s exp(β Σ_⟨xy⟩ s_x s_y); free_energy_density f = −log Z / V")


def log_weights(action: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """log w = −S − log q per proposal (up to the constant log Z)."""
    return -np.asarray(action, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)


def independence_metropolis(log_w: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """(indices (N,) of the proposals the chain holds at each step, acceptance rate). Proposal
    0 starts the chain; proposal i is offered at step i and accepted with min(1, w_i / w_cur)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    _check_log_weights(log_w)
    u = np.log(np.random.default_rng(seed).random(len(log_w)))
    idx = np.empty(len(log_w), dtype=np.int64)
    cur, accepted = 0, 0
    idx[0] = 0
    for i in range(1, len(log_w)):
        if u[i] < log_w[i] - log_w[cur]:
            cur = i
            accepted += 1
        idx[i] = cur
        if i % CHAIN_PULSE == 0:
            pulse(i, len(log_w), "Metropolis step")
    return idx, accepted / max(len(log_w) - 1, 1)


def _check_log_weights(log_w: np.ndarray, what: str = "log weights −S − log q") -> None:
    """Every log weight a finite number, or one line saying how many are not (a NaN or an
    overflow would make the chain stick and log Z NaN without a word)."""
    bad = ~np.isfinite(log_w)
    if log_w.ndim != 1 or len(log_w) < 1:
        raise PhysdiffError(f"{what} must be one number per proposal, (N,) with N >= 1; got shape {log_w.shape}")
    if bad.any():
        raise PhysdiffError(f"{what} are not finite for {int(bad.sum())} of the {len(log_w)} proposals "
                            f"({int(np.isnan(log_w).sum())} nan, {int(np.isinf(log_w).sum())} ±inf); every weight "
                            "must be a finite number")


def log_partition_function(log_w: np.ndarray, offset: float = 0.0, n_boot: int = 200, seed: int = 0) -> dict:
    """log Z = log E_q[e^{−S}/q] from the log importance weights log w = −S − log q of N
    independent proposals (Nicoli et al., PRL 126, 032001 (2021), for flows): log Ẑ = log (Σ w / N)
    + ``offset`` (the constant that maps an embedded theory's log Z to the theory's own).

    Error: the delta method on the mean of the weights, σ(log Ẑ)² = Var(w) / (N w̄²) =
    (1/ESS₁ − 1)/N with ESS₁ = w̄² / mean(w²) Kish's ESS per proposal; the bootstrap over the
    proposals is reported beside it as a check. log Ẑ is biased low by about σ²/2 (Jensen); both
    the bias and the error are only as good as the weights' tail: when the largest weight carries
    a large share of the sum (``max_weight_share``), the estimate is unreliable (``warning``)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    _check_log_weights(log_w)
    n = len(log_w)
    top = float(np.max(log_w))
    w = np.exp(log_w - top)
    s = float(w.sum())
    value = top + math.log(s / n) + offset
    ess1 = s * s / (n * float((w * w).sum()))
    error = math.sqrt(max(1.0 / ess1 - 1.0, 0.0) / n)
    rng = np.random.default_rng(seed)

    def log_mean(i):  # in log space: a resample that misses the largest weights must not underflow to log 0
        a = log_w[i]
        t = float(a.max())
        return t + math.log(float(np.exp(a - t).mean()))

    boots = np.array([log_mean(i) - top for i in rng.integers(0, n, size=(n_boot, n))])
    scale = float(np.max(np.abs(boots - np.median(boots))))  # weights apart by ~1e300 nats: no overflow
    share = float(w.max() / s)
    out = {"value": value, "error": error,
           "bootstrap_error": scale * float(np.std(boots / scale, ddof=1)) if scale > 0 else 0.0,
           "max_weight_share": share, "n": n}
    if share > MAX_WEIGHT_SHARE or ess1 * n < 10:
        out["warning"] = (f"unreliable: the largest of {n} weights carries {share:.0%} of their sum (Kish ESS "
                          f"{ess1 * n:.1f}); the error is underestimated; draw more proposals or train longer")
    return out


def log_z_difference(log_w_a: np.ndarray, log_w_b: np.ndarray) -> dict:
    """log Z_b − log Z_a from one set of proposals weighted for two targets (e.g. two couplings:
    ``sample_exact(run, n, seed, theory=...)`` twice on the same seed), log w = −S − log q for
    each: the delta method with the covariance of the two weights, so that the common proposal
    noise cancels. f_b − f_a = −(log Z_b − log Z_a)/V."""
    a, b = np.asarray(log_w_a, dtype=np.float64), np.asarray(log_w_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise PhysdiffError("log_z_difference needs two (N,) arrays of log weights of the same proposals, N >= 2; "
                            f"got shapes {a.shape} and {b.shape}")
    _check_log_weights(a, "log weights of the first target")
    _check_log_weights(b, "log weights of the second target")
    wa, wb = np.exp(a - a.max()), np.exp(b - b.max())
    ra, rb = wa / wa.mean(), wb / wb.mean()  # relative weights: the delta method's gradient
    d = rb - ra
    value = (b.max() + math.log(wb.mean())) - (a.max() + math.log(wa.mean()))
    return {"value": float(value), "error": float(np.std(d, ddof=1) / math.sqrt(len(d)))}


def log_z_difference_of(z_a: dict, z_b: dict) -> dict:
    """log Z_b − log Z_a of two independent estimates (two runs, :func:`log_partition_function`):
    errors in quadrature."""
    return {"value": z_b["value"] - z_a["value"], "error": math.hypot(z_a["error"], z_b["error"])}


def free_energy_difference(exact: ExactSample, theory_a, embedding=None) -> dict:
    """log Z_b − log Z_a from one set of proposals: b the theory ``exact`` targets (its log w),
    a = ``theory_a`` (e.g. another coupling), the same proposals weighted for a
    (:func:`log_z_difference`, correlated: the common proposal noise cancels). ``embedding``: the
    run's embedding (its continuous variable is what the proposals are); then both log Z are the
    theories' own (the closed-form offsets of the two embeddings added). With the free-energy
    density difference f_b − f_a = −(log Z_b − log Z_a)/V, and d log Z/dκ = 2⟨Σ_{x,μ} φ_x φ_{x+μ̂}⟩
    for φ⁴ as a check (tests)."""
    emb_a = None if embedding is None else theory_a.embedding(embedding.name, embedding.L, embedding.shift)
    target_a = theory_a.action if emb_a is None else emb_a.action
    action_a = _action(target_a, exact.proposals, _who(theory_a, emb_a))
    diff = log_z_difference(log_weights(action_a, exact.log_q), exact.log_w)
    if embedding is not None:
        diff["value"] += exact.report["embedding"]["log_z_offset"] - emb_a.log_z_offset()
    V = exact.proposals[0].size
    return {"from": theory_a.params, "to": exact.report.get("params", {}), "log_z": diff,
            "free_energy_density": {"value": -diff["value"] / V, "error": diff["error"] / V}}


def reweighted(values: dict[str, np.ndarray], log_w: np.ndarray) -> dict[str, dict]:
    """⟨O⟩_w = Σ w O / Σ w for each per-sample series in ``values``, with the error of the ratio
    (linear propagation over independent proposals, ``stats.derived``)."""
    w = np.exp(log_w - np.max(log_w))
    out = {}
    for name, v in values.items():
        est = derived(lambda a: a[0] / a[1], [w * v, w])
        out[name] = {"value": est.value, "error": est.error}
    return out


@dataclass(frozen=True, eq=False)
class ExactSample:
    """An exact sampler's output (arrays in data units; states in the dtype they were drawn in,
    float32 from a run): ``chain`` (N, L, L) the states of the independence
    Metropolis–Hastings chain after its burn-in (proposals[indices]; with an embedding, spins
    drawn afresh at each step given proposals[indices]); ``proposals`` (N + B, L, L)
    the model's samples (B = report["burn_in"]) and ``log_q`` (N + B,) their exact log-density
    (nats, data units); ``action`` (N + B,) S of each proposal; ``log_w`` (N + B,) = −S − log q;
    ``indices`` (N,) the proposal the chain holds at each kept step; ``report``: burn-in,
    acceptance, Kish ESS/N with its error, τ_int of M and |M| along the chain, reweighted
    observables (:func:`metropolis_chain`). From :func:`sample_exact` also ``nfe``
    (network evaluations per batch), ``sampler`` and ``options`` (what drew the proposals) and
    ``snapshots`` (as ``LoadedRun.sample``)."""

    chain: np.ndarray
    proposals: np.ndarray
    log_q: np.ndarray
    action: np.ndarray
    log_w: np.ndarray
    indices: np.ndarray
    report: dict
    nfe: int | None = None
    sampler: str | None = None
    options: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)
    fields: np.ndarray | None = None  # the theory's field of each proposal (N + B, L, L): proposals
    # themselves, or their embedding's exact read-out (spins)


def default_burn_in(n: int) -> int:
    """Chain steps discarded before the n kept ones: max(10, n // 20). An independence chain
    forgets its start (a draw from q, not from e^{−S}) in a few τ_int, which is 1–3 steps at the
    acceptances physdiff reaches; 5 % of the proposals (at least 10) is many times that."""
    return max(10, int(n) // 20)


def _reweighting_series(theory, states: np.ndarray) -> dict[str, np.ndarray]:
    """The per-proposal series whose importance-reweighted means the report gives: |M|, χ₂ = V M²
    and the theory's density."""
    import torch

    V = states[0].size
    m = states.reshape(len(states), -1).mean(1)
    density = theory.density(torch.from_numpy(np.asarray(states, dtype=np.float64))).numpy()
    return {"abs_m": np.abs(m), "chi2": V * m**2, "action_density": density}


def _who(theory, embedding=None) -> str:
    """The theory (and embedding) an action belongs to, for a message."""
    label = getattr(theory, "label", None) or getattr(theory, "name", None) or type(theory).__name__
    who = f"theory {getattr(theory, 'name', type(theory).__name__)!r} ({label})"
    return who if embedding is None else f"the {embedding.name} embedding of {who}"


def _action(target, proposals: np.ndarray, who: str) -> np.ndarray:
    """S of every proposal (N,) float64 by ``target`` (a theory's or an embedding's action), or one
    line naming ``who`` when it is not one finite number per proposal: a user's theory checked
    on random configurations (``theory.check_theory``) may still be NaN or infinite on the
    proposals, or return another shape for a batch of another size."""
    import torch

    x = torch.from_numpy(np.asarray(proposals, dtype=np.float64))
    try:
        out = target(x)
    except PhysdiffError:
        raise
    except Exception as exc:
        raise PhysdiffError(f"{who}: its action raised {type(exc).__name__} on the {len(x)} proposals: {exc}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x),):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PhysdiffError(f"{who}: its action returned {got} for {len(x)} proposals of shape {tuple(x.shape[1:])}; "
                            "it must return one number per configuration, (N,)")
    action = out.detach().double().cpu().numpy()
    bad = ~np.isfinite(action)
    if bad.any():
        raise PhysdiffError(f"{who}: its action is not finite on {int(bad.sum())} of the {len(action)} proposals "
                            f"({int(np.isnan(action).sum())} nan, {int(np.isposinf(action).sum())} +inf, "
                            f"{int(np.isneginf(action).sum())} -inf); the exact sampler needs a finite action on "
                            "every configuration the model draws")
    return action


def _check_log_q(log_q: np.ndarray, n: int, what: str = "the proposals' log q") -> np.ndarray:
    log_q = np.asarray(log_q, dtype=np.float64)
    if log_q.shape != (n,):
        raise PhysdiffError(f"{what} must be one number per proposal, ({n},); got shape {log_q.shape}")
    bad = ~np.isfinite(log_q)
    if bad.any():
        raise PhysdiffError(f"{what} is not finite for {int(bad.sum())} of the {n} proposals "
                            f"({int(np.isnan(log_q).sum())} nan, {int(np.isinf(log_q).sum())} ±inf): the model's "
                            "density diverged there (integrate with more ODE steps, or train longer)")
    return log_q


def _check_report(report: dict, who: str) -> dict:
    """Every number of an exact sampler's report finite, or one line naming the first that is not."""
    where = first_non_finite(report)
    if where is not None:
        path, value = where
        raise PhysdiffError(f"the exact sampler's {path} came out {value} for {who}; physdiff reports no number "
                            "that is not finite (the weights or the chain are degenerate: check the theory's action "
                            "and the run)")
    return report


def metropolis(theory, proposals: np.ndarray, log_q: np.ndarray, seed: int = 0, burn_in: int = 0,
               embedding=None) -> ExactSample:
    """The independence Metropolis–Hastings chain of model proposals (N, L, L) with their exact
    log q (nats, data units) under ``theory``'s action, with every intermediate (see
    :class:`ExactSample`). The first ``burn_in`` steps are run and discarded: the chain holds
    N − burn_in states, its acceptance and τ_int are those of the kept steps; the importance
    weights (ESS, reweighted observables, log Z) use every proposal, as they need no burn-in.

    ``embedding`` (``embedding.py``): the proposals are its continuous variable x; the chain
    targets e^{−S_x}; each proposal's field is the exact draw ``embedding.project(x)`` (the
    reweighted observables), and the chain's state at step i is a fresh exact draw of the spins
    given its x at that step, so the chain's states are those of ``theory``; log Z is the theory's
    (log Z_x plus the embedding's closed-form offset)."""
    from ..seeding import check_seed

    seed = check_seed(seed)
    proposals = np.asarray(proposals)
    if isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)) \
            or not 0 <= burn_in <= len(proposals) - 2:
        raise PhysdiffError(f"burn-in {burn_in!r} is not allowed for {len(proposals)} proposals; allowed: an integer "
                            f"from 0 to {len(proposals) - 2} (the chain needs at least 2 steps after its burn-in)")
    burn_in = int(burn_in)
    log_q = _check_log_q(log_q, len(proposals))
    who = _who(theory, embedding)
    action = _action(theory.action if embedding is None else embedding.action, proposals, who)
    log_w = log_weights(action, log_q)
    _check_log_weights(log_w)
    full, _ = independence_metropolis(log_w, seed)
    idx = full[burn_in:]
    acc = float(np.mean(full[burn_in + 1:] != full[burn_in:-1])) if len(idx) > 1 else 0.0
    states = proposals if embedding is None else embedding.project(proposals)
    chain = states[idx]
    if embedding is not None:  # fresh spins at every step, given the chain's x: a repeated x gets new
        # spins (still exact: s_t ~ p(s | x_t) with x_t ~ p(x) is a draw of p(s)), which spreads a stuck state
        u = np.random.default_rng([seed, 0x5EED]).random(chain.shape)
        chain = embedding.project(proposals[idx], uniforms=u)
    V = states[0].size
    m = chain.reshape(len(chain), -1).mean(1)
    offset = 0.0 if embedding is None else embedding.log_z_offset()
    # numbers beyond the floats' range (an action of 1e300) come out inf or NaN here, silently: the
    # report's check below refuses them in one line (a warning first would make it two)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        log_z = log_partition_function(log_w, offset, seed=seed)
        info = {"metropolis": True, "params": theory.params, "burn_in": int(burn_in), "acceptance": acc,
                **summary(log_w, seed),
                "tau_int_m_chain": gamma_method(m).tau_int, "tau_int_abs_m_chain": gamma_method(np.abs(m)).tau_int,
                "reweighted": reweighted(_reweighting_series(theory, states), log_w),
                "log_z": log_z,
                "free_energy_density": {"value": -log_z["value"] / V, "error": log_z["error"] / V},
                "log_z_convention": LOG_Z_CONVENTION}
    if embedding is not None:
        info["embedding"] = {"name": embedding.name, "shift": embedding.shift, "log_z_offset": offset}
    return ExactSample(chain, proposals, log_q, action, log_w, idx, _check_report(info, who), fields=states)


def metropolis_chain(theory, proposals: np.ndarray, log_q: np.ndarray, seed: int = 0,
                     burn_in: int = 0) -> tuple[np.ndarray, dict]:
    """(chain, report) of :func:`metropolis`: the independence Metropolis–Hastings chain of model
    proposals (N, L, L) with their exact log q (nats, data units), and its report: acceptance,
    Kish ESS/N with bootstrap error, τ_int of M and |M| along the chain, and importance-reweighted
    ⟨|M|⟩, χ₂ and action density."""
    res = metropolis(theory, proposals, log_q, seed, burn_in)
    return res.chain, res.report


def run_theory(run):
    """The lattice theory a trained run was trained on (its action is the target e^{−S}).
    The one place that reads it from a run's config."""
    from ..errors import PhysdiffError

    if run.theory is None:
        raise PhysdiffError(f"run {str(run.path)!r} is not a lattice run: its data have no action")
    return run.theory


def default_log_q_check(n: int) -> int:
    """Proposals re-integrated by the solver check: 5 % of them, at least 16 (all when fewer):
    at twice the steps they add about a tenth to the sampling time."""
    return min(int(n), max(16, int(n) // 20))


def _quantiles(a: np.ndarray) -> dict:
    q = np.quantile(a, [0.05, 0.5, 0.95])
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "max_abs": float(np.abs(a).max()), "q05": float(q[0]), "median": float(q[1]), "q95": float(q[2])}


def solver_check(theory, coarse: ExactSample, fine_x: np.ndarray, fine_log_q: np.ndarray, embedding=None,
                 settings: dict | None = None) -> dict:
    """How much the ODE solver's error in log q moves the results: the first k proposals of
    ``coarse`` (drawn with the run's solver) against the same k (same x_T) integrated again more
    finely, ``fine_x`` (k, L, L) with ``fine_log_q`` (k,).

    log q is the exact density of the continuous flow only up to the integrator; the weights, the
    chain and log Z inherit that error. Reported: the distribution of Δlog q = log q_fine −
    log q (a constant cancels in every ratio, its spread does not), of Δlog w, the largest
    |Δx|, and for log Z and each reweighted observable the shift between the k proposals
    reweighted with the fine and with the run's weights (paired, so that the sampling noise
    cancels), in units of the whole run's error. ``warning`` when a shift exceeds
    ``LOG_Q_CHECK_WARN`` errors: integrate with more steps (``steps``) before trusting the
    errors."""
    k = len(fine_x)
    fine_x = np.asarray(fine_x)
    fine_log_q = _check_log_q(fine_log_q, k, "the finer solve's log q")
    who = _who(theory, embedding)
    fine_action = _action(theory.action if embedding is None else embedding.action, fine_x, who)
    fine_log_w = log_weights(fine_action, fine_log_q)
    _check_log_weights(fine_log_w, "log weights of the finer solve")
    c_x, c_log_q, c_log_w = coarse.proposals[:k], coarse.log_q[:k], coarse.log_w[:k]
    if embedding is None:
        c_states, f_states = c_x, fine_x
    else:  # the same uniforms for both: the read-out differs only where x moved across them
        from .embedding import configuration_uniforms

        u = configuration_uniforms(np.asarray(c_x))
        c_states, f_states = embedding.project(c_x, uniforms=u), embedding.project(fine_x, uniforms=u)
    c_rw = reweighted(_reweighting_series(theory, c_states), c_log_w)
    f_rw = reweighted(_reweighting_series(theory, f_states), fine_log_w)
    shifts = {}
    for name, full in coarse.report["reweighted"].items():
        d = f_rw[name]["value"] - c_rw[name]["value"]
        shifts[name] = {"value": d, "in_errors": d / full["error"] if full["error"] > 0 else None}

    def log_mean_exp(a):
        return float(a.max() + math.log(np.mean(np.exp(a - a.max()))))

    dz = log_mean_exp(fine_log_w) - log_mean_exp(c_log_w)
    # the shift's own error: the bootstrap over the k pairs, resampled together (paired)
    pairs = np.random.default_rng(0).integers(0, k, size=(200, k))
    dz_err = float(np.std([log_mean_exp(fine_log_w[i]) - log_mean_exp(c_log_w[i]) for i in pairs], ddof=1))
    z_err = coarse.report["log_z"]["error"]
    out = {"n": k, **(settings or {}), "dlog_q": _quantiles(fine_log_q - c_log_q),
           "dlog_w": _quantiles(fine_log_w - c_log_w), "max_abs_dx": float(np.abs(fine_x - c_x).max()),
           "log_z_shift": {"value": dz, "error": dz_err, "in_errors": dz / z_err if z_err > 0 else None},
           "shifts": shifts}
    worst = {name: abs(v["in_errors"]) for name, v in [*shifts.items(), ("log_z", out["log_z_shift"])]
             if v["in_errors"] is not None}
    out["largest_shift_in_errors"] = max(worst.values(), default=0.0)
    bad = {name: e for name, e in worst.items() if e > LOG_Q_CHECK_WARN}
    if bad:
        listed = ", ".join(f"{name} by {e:.2f}" for name, e in sorted(bad.items(), key=lambda kv: -kv[1]))
        out["warning"] = (f"the ODE solver's error in log q moves {listed} errors (checked on {k} proposals against "
                          f"{settings.get('check', 'a finer solve') if settings else 'a finer solve'}); "
                          "integrate with more steps before trusting these errors")
    return out


def refined_log_z(log_z: dict, check: dict) -> dict:
    """log Z moved by the solver check's paired shift (:func:`solver_check`): the estimate of
    log Z that the finer solve would give, from the run's N proposals and the check's k pairs.
    The integrator's bias in log q is systematic (the same sign for every proposal): it does not
    average away with N, and at L ≥ 8 it is of the order of log Z's statistical error at the
    default 12 RK4 steps (benchmarks/README.md). The shift removes it up to what the finer solve
    leaves, about |shift| / (2^p − 1) for a solver of order p (``SOLVER_ORDER``: RK4 1/15 of
    it); that remainder enters as a systematic error (``solver_systematic``). ``error``: the
    statistical error of log Z, the shift's own error and that systematic in quadrature, so that
    it covers the solver's bias; ``statistical_error`` the first alone. The other entries of
    ``log_z`` (bootstrap error, largest weight share, warning) are kept: they describe its
    weights."""
    shift = check["log_z_shift"]
    method = check.get("method") or str(check.get("check", "rk4")).split(" ")[0]
    order = SOLVER_ORDER.get(method, 1)
    systematic = abs(shift["value"]) / (2**order - 1)
    shift_error = shift.get("error", 0.0)
    error = math.sqrt(log_z["error"] ** 2 + shift_error**2 + systematic**2)
    return {**log_z, "value": log_z["value"] + shift["value"], "error": error, "statistical_error": log_z["error"],
            "solver": check.get("check", "a finer solve"), "shift": shift["value"], "shift_error": shift_error,
            "solver_systematic": systematic}


def _finer(options: dict, prediction: str) -> tuple[dict, dict]:
    """The solver options of the check (twice the fixed steps; for adaptive dopri5 tolerances
    16× tighter) and a description of both."""
    from .. import ode

    method = options.get("method") or ode.DEFAULT_METHOD
    if method == "dopri5":
        rtol, atol = options.get("rtol") or 1e-5, options.get("atol") or 1e-5
        return ({**options, "rtol": rtol / 16, "atol": atol / 16},
                {"solver": f"dopri5 rtol {rtol:g} atol {atol:g}", "check": f"dopri5 rtol {rtol / 16:g} atol "
                                                                            f"{atol / 16:g}", "method": method})
    steps = options.get("steps") or ode.default_steps(prediction)
    return ({**options, "steps": 2 * steps},
            {"solver": f"{method} {steps} steps", "check": f"{method} {2 * steps} steps", "method": method})


def max_burn_in(n: int) -> int:
    """The longest burn-in allowed before n kept chain steps: n, or ``MAX_BURN_IN_FLOOR`` when n is
    smaller. An independence chain forgets its start in a few τ_int (1–3 steps at the acceptances
    physdiff reaches, :func:`default_burn_in`); a longer burn-in only draws proposals that are
    thrown away, and an unbounded one runs unbounded."""
    return max(int(n), MAX_BURN_IN_FLOOR)


def _count(value, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise PhysdiffError(f"{name} = {value!r} is not allowed; allowed: an integer >= {lo}")
    return int(value)


def sample_exact(run, n: int, seed: int, *, batch_size: int | None = None, theory=None, chain_seed: int | None = None,
                 snapshot_steps: tuple[int, ...] = (), sampler: str | None = None, burn_in: int | None = None,
                 log_q_check: int | None = None, progress=None,
                 **ode_options) -> ExactSample | None:
    """Exact samples of e^{−S} from a trained lattice run: n proposals with their exact log q
    from the run's density sampler (``samplers.density_sampler()``, the probability-flow ODE;
    ``ode_options``: its options, e.g. steps, method), the action of ``theory`` (default: the
    run's, :func:`run_theory`), then the independence Metropolis chain (:func:`metropolis`,
    accept/reject draws from ``chain_seed``, default ``seed``). ``burn_in`` (default
    :func:`default_burn_in`, at most :func:`max_burn_in`) more proposals are drawn and their chain
    steps discarded, so that the chain holds n states. Proposal i depends only on (seed, i).
    ``sampler``: another registered sampler that declares ``exact_density``. ``progress``: a bar
    counting the proposals (those of the solver check included), advanced per batch, with the
    ODE's evaluations and the chain's steps reported within a batch (``progress.pulse``).

    ``log_q_check`` (default :func:`default_log_q_check`; 0: off): that many proposals are
    integrated again with twice the steps and the report's ``log_q_check``
    (:func:`solver_check`) says how far the solver's error in log q moves log Z and every
    reweighted observable, in units of their errors. Then the report's ``log_z`` is log Z with
    the finer solve, its error covering the solver's bias (:func:`refined_log_z`), the estimate
    of the run's own solve beside it as ``log_z_raw`` (``log_z_refined``: the same as ``log_z``,
    kept for readers of earlier versions); ``free_energy_density`` follows ``log_z``.

    Every number of the report is finite: a theory whose action is not finite on some proposals,
    a log q that is not, or a degenerate chain is one PhysdiffError naming it.

    Under torchrun each process draws its contiguous share of the proposals and rank 0 gathers
    them, runs the chain and gets the result; the other ranks get None.
    """
    from .. import dist
    from ..checkpoint import check_memory
    from ..progress import progress_bar
    from ..samplers import density_sampler, get_sampler
    from ..seeding import check_seed

    seed = check_seed(seed)
    chain_seed = seed if chain_seed is None else check_seed(chain_seed, "chain_seed")
    spec = density_sampler() if sampler is None else get_sampler(sampler)
    if not spec.exact_density:
        raise PhysdiffError(f"sampler {spec.name!r} has no exact log-density; the exact sampler needs one "
                            f"(e.g. {density_sampler().name!r})")
    theory = run_theory(run) if theory is None else theory
    if theory.discrete is not None and getattr(run, "embedding", None) is None:
        raise PhysdiffError(f"run {str(run.path)!r} learnt {theory.title or theory.name} spins themselves "
                            "(data.embedding = none): they have no density; the exact sampler needs a run trained "
                            "on a continuous embedding")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise PhysdiffError(f"the exact sampler needs n >= 2 chain states (got {n!r}): acceptance, τ_int and errors "
                            "need at least two")
    n = int(n)
    burn_in = default_burn_in(n) if burn_in is None else _count(burn_in, "burn-in", 0)
    if burn_in > max_burn_in(n):
        raise PhysdiffError(f"burn-in {burn_in} is more than allowed for {n} kept chain steps; allowed: at most "
                            f"{max_burn_in(n)} (n, or {MAX_BURN_IN_FLOOR} when n is smaller): an independence chain "
                            f"forgets its start in a few steps (default {default_burn_in(n)})")
    n = n + burn_in
    sites = math.prod(run.data_shape)
    check_memory(n * sites * PROPOSAL_BYTES_PER_SITE, f"{n} proposals (burn-in {burn_in} included) of {sites} sites")
    k = default_log_q_check(n) if log_q_check is None else min(_count(log_q_check, "log_q_check", 0), n)
    k = k if k >= 2 else 0
    lo, hi = dist.shard(n)
    with progress_bar(progress, hi - lo + (k if dist.is_main() else 0), "exact sampler", "proposal") as bar:
        res = run.sample(hi - lo, seed, start=lo, batch_size=batch_size, snapshot_steps=snapshot_steps,
                         sampler=spec.name, log_prob=True, continuous=True, progress=bar, **ode_options)
        x, log_q = dist.gather_rows(res.samples), dist.gather_rows(res.log_prob)
        snaps = {key: dist.gather_rows(v) for key, v in res.snapshots.items()}
        if not dist.is_main():
            return None
        proposals = run.kind.to_output(x, run.cfg)  # (N, 1, L, L) → (N, L, L), float32 as drawn
        embedding = getattr(run, "embedding", None)
        if embedding is not None:  # the same embedding of the target theory (another β: a "wrong" model)
            embedding = theory.embedding(embedding.name, embedding.L, embedding.shift)
        out = metropolis(theory, proposals, log_q, chain_seed, burn_in, embedding=embedding)
        if k:
            options = {key: v for key, v in res.options.items() if key != "log_prob"}
            finer, settings = _finer(options, run.cfg.diffusion.prediction)
            fine = run.sample(k, seed, start=0, batch_size=batch_size, sampler=spec.name, log_prob=True,
                              continuous=True, progress=bar, **finer)
            report = out.report
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # refused below, in one line
                report["log_q_check"] = chk = solver_check(theory, out, run.kind.to_output(fine.samples, run.cfg),
                                                           fine.log_prob, embedding, settings)
                V = out.proposals[0].size
                report["log_z_raw"] = raw = report["log_z"]
                report["log_z"] = report["log_z_refined"] = lz = refined_log_z(raw, chk)
                report["free_energy_density"] = {"value": -lz["value"] / V, "error": lz["error"] / V}
            _check_report(report, _who(theory, embedding))
    return ExactSample(out.chain, out.proposals, out.log_q, out.action, out.log_w, out.indices, out.report,
                       res.nfe, res.sampler, res.options, snaps, out.fields)


def summary(log_w: np.ndarray, seed: int = 0) -> dict:
    """Kish ESS per proposal with its bootstrap error, from the log weights."""
    _check_log_weights(np.asarray(log_w, dtype=np.float64))
    ess, err = kish_ess(log_w, seed=seed)
    return {"ess_per_sample": ess, "ess_per_sample_error": err, "n_proposals": len(log_w)}


def check_metropolis(run, sampler: str | None) -> None:
    """The exact sampler needs a theory with a density on its field, and a density sampler."""
    from ..samplers import density_names, get_sampler

    if run.theory is None:
        raise PhysdiffError("a Metropolis chain (--metropolis) needs a lattice run (a theory with an action); "
                            "this run's data are of kind "
                            f"{run.kind.name!r}")
    if run.theory.discrete is not None and run.embedding is None:
        raise PhysdiffError("a Metropolis chain (--metropolis) is not available for this "
                            f"{run.theory.title or run.theory.name} run: it "
                            "learnt the spins themselves (data.embedding = none), read through their sign, which "
                            "have no density; train with the default data.embedding (hubbard-stratonovich)")
    if sampler is not None and not get_sampler(sampler).exact_density:
        raise PhysdiffError("a Metropolis chain (--metropolis) needs a sampler with an exact density "
                            f"({' or '.join(density_names())}); "
                            f"--sampler {sampler} has none")


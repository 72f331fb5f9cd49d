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
"""

from __future__ import annotations

import numpy as np

from ..stats import derived, gamma_method, kish_ess


def log_weights(action: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """log w = −S − log q per proposal (up to the constant log Z)."""
    return -np.asarray(action, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)


def independence_metropolis(log_w: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """(indices (N,) of the proposals the chain holds at each step, acceptance rate). Proposal
    0 starts the chain; proposal i is offered at step i and accepted with min(1, w_i / w_cur)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    u = np.log(np.random.default_rng(seed).random(len(log_w)))
    idx = np.empty(len(log_w), dtype=np.int64)
    cur, accepted = 0, 0
    idx[0] = 0
    for i in range(1, len(log_w)):
        if u[i] < log_w[i] - log_w[cur]:
            cur = i
            accepted += 1
        idx[i] = cur
    return idx, accepted / max(len(log_w) - 1, 1)


def reweighted(values: dict[str, np.ndarray], log_w: np.ndarray) -> dict[str, dict]:
    """⟨O⟩_w = Σ w O / Σ w for each per-sample series in ``values``, with the error of the ratio
    (linear propagation over independent proposals, ``stats.derived``)."""
    w = np.exp(log_w - np.max(log_w))
    out = {}
    for name, v in values.items():
        est = derived(lambda a: a[0] / a[1], [w * v, w])
        out[name] = {"value": est.value, "error": est.error}
    return out


def metropolis_chain(theory, proposals: np.ndarray, log_q: np.ndarray, seed: int = 0) -> tuple[np.ndarray, dict]:
    """The independence Metropolis–Hastings chain of model proposals (N, L, L) with their exact
    log q (nats, data units), and its report: acceptance, Kish ESS/N with bootstrap error, τ_int
    of M and |M| along the chain, and importance-reweighted ⟨|M|⟩, χ₂ and action density."""
    import torch

    action = theory.action(torch.from_numpy(np.asarray(proposals, dtype=np.float64))).numpy()
    log_w = log_weights(action, log_q)
    idx, acc = independence_metropolis(log_w, seed)
    V = proposals[0].size
    m_prop = proposals.reshape(len(proposals), -1).mean(1)
    m = m_prop[idx]
    info = {"metropolis": True, "acceptance": acc, **summary(log_w, seed),
            "tau_int_m_chain": gamma_method(m).tau_int, "tau_int_abs_m_chain": gamma_method(np.abs(m)).tau_int,
            "reweighted": reweighted({"abs_m": np.abs(m_prop), "chi2": V * m_prop**2, "action_density": action / V},
                                     log_w)}
    return proposals[idx], info


def summary(log_w: np.ndarray, seed: int = 0) -> dict:
    """Kish ESS per proposal with its bootstrap error, from the log weights."""
    ess, err = kish_ess(log_w, seed=seed)
    return {"ess_per_sample": ess, "ess_per_sample_error": err, "n_proposals": len(log_w)}

"""Reference Monte Carlo: HMC for φ⁴ (vectorised over chains) with Wolff cluster updates of the
embedded Ising signs (Brower & Tamayo 1989), and the Wolff algorithm for the 2D Ising model
(Wolff 1989). Thermalisation is measured, not assumed: half of the chains start hot and half
cold, burn-in and the spacing of the saved configurations come from the integrated
autocorrelation time of a pilot run, and the two halves are compared at the end. A stream can be
continued: :func:`mcmc_stream` returns the chains' state (configurations, both generators, HMC
step), from which :func:`extend_mcmc` makes exactly the configurations one longer run would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .. import seeding
from ..errors import PhysdiffError
from ..stats import first_non_finite, gamma_method
from .theory import Theory

TARGET_ACCEPTANCE = 0.8


def leapfrog(theory: Theory, phi: torch.Tensor, mom: torch.Tensor, eps: float, n: int):
    """n leapfrog steps of size eps for H = ½ p² + S(φ): reversible and area-preserving
    (Duane et al. 1987). Returns the new (φ, p)."""
    mom = mom + 0.5 * eps * theory.force(phi)
    for i in range(n):
        phi = phi + eps * mom
        if i < n - 1:
            mom = mom + eps * theory.force(phi)
    mom = mom + 0.5 * eps * theory.force(phi)
    return phi, mom


def hmc_step(theory: Theory, phi: torch.Tensor, eps: float, n: int, gen: torch.Generator):
    """One HMC trajectory per chain: Gaussian momenta, leapfrog, Metropolis on ΔH.
    phi: (B, L, L) float64. Returns (new φ, accepted (B,) bool)."""
    mom = torch.randn(phi.shape, generator=gen, dtype=phi.dtype)
    dims = tuple(range(1, phi.dim()))
    h0 = 0.5 * (mom**2).sum(dims) + theory.action(phi)
    new, mom_new = leapfrog(theory, phi, mom, eps, n)
    h1 = 0.5 * (mom_new**2).sum(dims) + theory.action(new)
    accept = torch.rand(phi.shape[0], generator=gen, dtype=phi.dtype) < torch.exp(-(h1 - h0)).clamp(max=1.0)
    return torch.where(accept.reshape(-1, *([1] * (phi.dim() - 1))), new, phi), accept


def wolff_update(x: np.ndarray, couplings: tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One Wolff single-cluster update per configuration (x: (B, L, L), φ or ±1 spins) of the
    Ising model of the signs with couplings β_xy, ``couplings`` = (bonds to the right, bonds
    below), each (B, L, L): bonds
    between equal signs are activated with probability 1 − e^{−2β_xy}; the cluster of a random
    site is flipped x → −x. The cluster is the connected component of that site, found for
    every configuration at once (scipy.sparse.csgraph). Returns the updated copy."""
    B, L, _ = x.shape
    V = L * L
    idx = np.arange(B * V).reshape(B, L, L)
    sign = np.sign(x)
    rows, cols = [], []
    for axis, beta in zip((-1, -2), couplings, strict=True):
        nb = np.roll(idx, -1, axis=axis)
        same = sign == np.roll(sign, -1, axis=axis)
        active = same & (rng.random(x.shape) < -np.expm1(-2.0 * beta))
        rows.append(idx[active])
        cols.append(nb[active])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(B * V, B * V))
    _, labels = connected_components(graph, directed=False)
    seeds = np.arange(B) * V + rng.integers(0, V, size=B)
    flip = labels.reshape(B, V) == labels[seeds][:, None]
    out = x.copy()
    out.reshape(B, V)[flip] *= -1
    return out


MIN_STEP = 1e-3  # the smallest HMC step: 1000 leapfrog steps per unit trajectory
MAX_SWEEPS = 10**6  # the most sweeps per chain that run_mcmc plans before it refuses


@dataclass
class Chains:
    """B Markov chains of one theory on an L×L lattice, with their update state."""

    theory: Theory
    x: np.ndarray  # (B, L, L) float64
    seed: int
    eps: float = 0.1
    n_leap: int = 10
    cluster: bool = True
    accepted: list = field(default_factory=list)
    tuning: list = field(default_factory=list)

    def __post_init__(self):
        self.gen = seeding.generator(self.seed)
        self.rng = np.random.default_rng(self.seed)

    def state(self) -> dict:
        """Everything the next sweep depends on, as plain arrays and numbers (no pickle): the
        configurations (B, L, L) float64, both generators' states, the HMC step and leapfrog
        count, and the acceptance of every production sweep so far."""
        return {"x": self.x.copy(), "torch_rng": self.gen.get_state().numpy().copy(),
                "numpy_rng": self.rng.bit_generator.state, "eps": self.eps, "n_leap": self.n_leap,
                "accepted": np.asarray(self.accepted, dtype=np.float64)}

    @classmethod
    def from_state(cls, theory: Theory, state: dict, cluster: bool) -> Chains:
        """The chains of :meth:`state`, to continue exactly where they stopped."""
        ch = cls(theory, np.array(state["x"], dtype=np.float64), 0, eps=float(state["eps"]),
                 n_leap=int(state["n_leap"]), cluster=cluster, accepted=[float(a) for a in state["accepted"]])
        ch.gen.set_state(torch.from_numpy(np.array(state["torch_rng"], dtype=np.uint8)))
        ch.rng.bit_generator.state = state["numpy_rng"]
        return ch

    def update(self, tune: bool = False) -> None:
        """One sweep: an HMC trajectory of length ≈ 1 for a real field, then the theory's cluster
        update if it has one (φ⁴: Wolff on the embedded signs; Ising: Wolff alone). With
        ``tune`` the step size moves towards TARGET_ACCEPTANCE (only during burn-in: a tuned
        step breaks detailed balance)."""
        if self.theory.discrete is None:
            phi, acc = hmc_step(self.theory, torch.from_numpy(self.x), self.eps, self.n_leap, self.gen)
            self.x = phi.numpy()
            if self.theory.compact:  # angles back into (−π, π]: S is 2π-periodic, so the chain is the same
                self.x = self.theory.postprocess(self.x)
            rate = float(acc.double().mean())
            if tune:
                self.eps = float(np.clip(self.eps * math.exp(0.5 * (rate - TARGET_ACCEPTANCE)), MIN_STEP, 0.5))
                self.n_leap = max(1, round(1.0 / self.eps))
                self.tuning.append(rate)
                if self.eps == MIN_STEP and len(self.tuning) >= 40 and np.mean(self.tuning[-20:]) < 0.05:
                    raise PhysdiffError(
                        f"HMC cannot move the chains of {self.theory.label}: acceptance "
                        f"{np.mean(self.tuning[-20:]):.2f} at the smallest step {MIN_STEP:g} (1000 leapfrog steps "
                        "per trajectory); the action is too stiff at these couplings (φ⁴: typically kappa ≲ 1, "
                        "lam ≲ 100)")
            else:
                self.accepted.append(rate)
        if self.cluster and self.theory.has_cluster_update:
            self.x = self.theory.cluster_update(self.x, self.rng)


def magnetisation(x: np.ndarray) -> np.ndarray:
    """Mean of the field over sites (and components) per configuration."""
    return x.reshape(len(x), -1).mean(1)


def run_mcmc(theory, L: int, n: int, *, seed: int = 0, chains: int = 16, cluster: bool = True,
             pilot: int = 300, log=None, progress=None) -> tuple[np.ndarray, dict]:
    """n configurations (n, L, L) float64 from ``chains`` chains and a report (acceptance, step,
    τ_int, burn-in, spacing, hot/cold agreement). n is rounded up to a multiple of the chains
    (:func:`rounded_n`; the report's ``n``, with ``n_requested`` when it differs), so every chain
    holds as many. Configurations are chain-major: chain c holds rows c·n/chains ..
    (c+1)·n/chains − 1, consecutive in Monte Carlo time. ``seed``: an integer from 0 to 2⁶³ − 1.
    A theory of the user's own (not physdiff's) is first tried on random configurations
    (``theory.check_theory``), and every number of the report must come out finite.

    The burn-in is every sweep before the first saved one: ``pilot`` sweeps that forget the start
    (and tune HMC's step), ``pilot`` that measure τ_int, then 20 τ_int more (``burn_in_sweeps`` in
    the report, and in ``log``'s line). ``progress``: of the thermalisation and the production
    sweeps (``progress.py``)."""
    x, report, _ = mcmc_stream(theory, L, n, seed=seed, chains=chains, cluster=cluster, pilot=pilot, log=log,
                               progress=progress)
    return x, report


def mcmc_stream(theory, L: int, n: int, *, seed: int = 0, chains: int = 16, cluster: bool = True,
                pilot: int = 300, log=None, progress=None) -> tuple[np.ndarray, dict, dict]:
    """:func:`run_mcmc` and the chains' final state (``Chains.state``), from which
    :func:`extend_mcmc` continues the stream exactly."""
    from ..progress import progress_bar

    if not isinstance(theory, Theory):
        raise PhysdiffError(f"{theory!r} is not a lattice theory (physdiff.lattice.Theory)")
    seed = seeding.check_seed(seed)
    from .theory import check_lattice_size, check_theory

    check_lattice_size("L", L)
    theory.validate(L)
    if not type(theory).__module__.startswith("physdiff."):  # a user's theory: tried before any work
        check_theory(type(theory), L, {k: v for k, v in theory.params.items() if k != "model"})
    if isinstance(chains, bool) or not isinstance(chains, (int, np.integer)):
        raise PhysdiffError(f"chains = {chains!r} is not allowed; allowed: an integer >= 2")
    if chains < 2:
        raise PhysdiffError(f"chains = {chains} is too few: the thermalisation check compares hot- and cold-start "
                            "chains, so it needs at least 2")
    if theory.discrete is not None and not (cluster and theory.has_cluster_update):
        raise PhysdiffError(f"theory {theory.name!r} has discrete spins: without cluster updates its chains would "
                            "never move (no HMC for spins); keep the cluster updates")
    requested, n = n, rounded_n(n, chains)
    _check_n(n, chains)
    rng = np.random.default_rng(seed)
    ch = Chains(theory, theory.start(L, chains, rng), seed + 1, cluster=cluster)
    start = theory.action(torch.from_numpy(ch.x))
    if isinstance(start, torch.Tensor) and start.shape == (chains,) and not torch.isfinite(start).all():
        raise PhysdiffError(f"theory {theory.name!r} ({theory.label}): its action is not finite on "
                            f"{int((~torch.isfinite(start)).sum())} of the {chains} starting configurations (half "
                            "random, half every value +1); physdiff needs a finite action everywhere")
    # the thermalisation's length is known only once the pilot has measured τ_int: its bar grows then
    with progress_bar(progress, 2 * pilot, f"mcmc {theory.name} L={L} thermalisation", "sweep") as bar:
        for _ in range(pilot):  # tune the step size and forget the start
            ch.update(tune=True)
            bar.update()
        series = []
        for _ in range(pilot):
            ch.update()
            series.append(theory.monitor(ch.x))
            bar.update()
        ch.accepted.clear()
        tau = gamma_method(np.stack(series, axis=1)).tau_int  # in sweeps, of the monitor (|M|) over all chains
        after_pilot = math.ceil(20 * tau)
        burn_in = 2 * pilot + after_pilot  # every sweep before the first saved configuration
        spacing = max(1, math.ceil(2 * tau))
        _check_plan(theory, n, chains, tau, burn_in, spacing)
        if log is not None:
            with bar.external_write():
                log(f"τ_int({theory.monitor_label}) = {tau:.2f} sweeps from a {pilot}-sweep pilot: burn-in {burn_in} "
                    "sweeps "
                    f"({pilot} tuning, {pilot} of pilot, then 20 τ_int = {after_pilot}), spacing {spacing}")
        bar.add_total(after_pilot)
        for _ in range(after_pilot):
            ch.update()
            bar.update()
    out = _produce(ch, n // chains, spacing, progress, f"mcmc {theory.name} L={L} production")
    report = {"L": L, "n": n, "chains": chains, "seed": seed, "cluster_updates": cluster,
              "pilot_tau_int_abs_m_sweeps": tau, "burn_in_sweeps": burn_in, "spacing_sweeps": spacing}
    if theory.monitor_name != "abs_m":  # the key keeps its name; what it measured is said here
        report["pilot_monitor"] = theory.monitor_name
    if requested != n:
        report["n_requested"] = int(requested)
    return _finish(ch, out, theory, report)


def extend_mcmc(theory, x: np.ndarray, report: dict, state: dict, n: int, log=None,
                progress=None) -> tuple[np.ndarray, dict, dict]:
    """The stream of :func:`mcmc_stream` continued from its saved ``state`` to n configurations in
    all: x (n_old, L, L) chain-major with its ``report``; returns what one call of
    :func:`mcmc_stream` for n would have returned — the same configurations bit for bit, since
    every sweep continues both generators where they stopped (the report's acceptance and
    hot/cold check are recomputed over all n, from x as given)."""
    chains, n_old = report["chains"], len(x)
    requested, n = n, rounded_n(n, chains)
    if n <= n_old:
        raise PhysdiffError(f"n = {n} does not extend the {n_old} configurations already made; ask for more")
    _check_n(n, chains)
    spacing = report["spacing_sweeps"]
    _check_plan(theory, n, chains, report["pilot_tau_int_abs_m_sweeps"], report["burn_in_sweeps"], spacing)
    ch = Chains.from_state(theory, state, report["cluster_updates"])
    if log is not None:
        log(f"resuming {chains} chains after {n_old} configurations: {(n - n_old) // chains} more per chain, "
            f"spacing {spacing} sweeps")
    more = _produce(ch, (n - n_old) // chains, spacing, progress, f"mcmc {theory.name} resume")
    out = np.concatenate([x.reshape(chains, n_old // chains, *x.shape[1:]), more], axis=1)
    keep = {k: v for k, v in report.items() if k not in ("hmc_acceptance", "thermalisation", "seconds",
                                                         "n_requested")}
    return _finish(ch, out, theory, keep | {"n": n} | ({"n_requested": int(requested)} if requested != n else {}))


def rounded_n(n: int, chains: int) -> int:
    """n rounded up to a multiple of ``chains`` (every chain holds as many configurations), or a
    PhysdiffError for an n that is not a positive integer."""
    if isinstance(chains, bool) or not isinstance(chains, (int, np.integer)) or chains < 1:
        raise PhysdiffError(f"chains = {chains!r} is not allowed; allowed: a positive integer")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise PhysdiffError(f"n = {n!r} is not allowed; allowed: a positive integer number of configurations")
    return -(-int(n) // int(chains)) * int(chains)


def _check_n(n: int, chains: int) -> None:
    if n % chains:
        raise PhysdiffError(f"n = {n} must be a multiple of the number of chains ({chains})")
    if n < 2 * chains:
        raise PhysdiffError(f"n = {n} gives fewer than 2 configurations per chain ({chains} chains); errors and the "
                            f"thermalisation check need n >= {2 * chains}")


def _check_plan(theory, n: int, chains: int, tau: float, burn_in: int, spacing: int) -> None:
    planned = burn_in + (n // chains) * spacing
    if planned > MAX_SWEEPS:
        raise PhysdiffError(f"τ_int(|M|) = {tau:.3g} sweeps at {theory.label}: {n} configurations would take "
                            f"{planned:.3g} sweeps (burn-in {burn_in}, spacing {spacing}), more than {MAX_SWEEPS:g}; "
                            "the chains barely move at these couplings: ask for fewer configurations or other "
                            "couplings")


def _produce(ch: Chains, per_chain: int, spacing: int, progress=None, desc: str = "mcmc production") -> np.ndarray:
    """(chains, per_chain, L, L): a configuration of every chain each ``spacing`` sweeps."""
    from ..progress import progress_bar

    out = np.empty((ch.x.shape[0], per_chain, *ch.x.shape[1:]))
    with progress_bar(progress, per_chain * spacing, desc, "sweep") as bar:
        for i in range(per_chain):
            for _ in range(spacing):
                ch.update()
                bar.update()
            out[:, i] = ch.x
    return out


def _finish(ch: Chains, out: np.ndarray, theory, report: dict) -> tuple[np.ndarray, dict, dict]:
    """The configurations (n, L, L), the report with HMC's numbers and the hot/cold check, and the
    chains' state; a PhysdiffError when a configuration, the action on one, or a number of the
    report is not finite (a theory of the user's own that is NaN or infinite where the chains went)."""
    who = f"theory {theory.name!r} ({theory.label})"
    bad = int((~np.isfinite(out)).sum())
    if bad:
        raise PhysdiffError(f"the chains of {who} reached {bad} non-finite field values; its action or force is "
                            "not finite there")
    import torch

    flat = out.reshape(-1, *out.shape[2:])
    action = theory.action(torch.from_numpy(flat))
    if not isinstance(action, torch.Tensor) or tuple(action.shape) != (len(flat),):
        got = tuple(action.shape) if isinstance(action, torch.Tensor) else type(action).__name__
        raise PhysdiffError(f"{who}: its action returned {got} for {len(flat)} configurations; it must return one "
                            "number per configuration, (N,)")
    nonfinite = int((~torch.isfinite(action)).sum())
    if nonfinite:
        raise PhysdiffError(f"{who}: its action is not finite (nan or inf) on {nonfinite} of the {len(flat)} "
                            "configurations the chains saved; physdiff needs a finite action everywhere")
    if theory.discrete is None:
        report |= {"hmc_acceptance": float(np.mean(ch.accepted)), "hmc_step": ch.eps, "hmc_leapfrog_steps": ch.n_leap}
    report["thermalisation"] = hot_cold_check(out, theory)
    where = first_non_finite(report)
    if where is not None:
        raise PhysdiffError(f"the Monte Carlo of {who}: its {where[0]} came out {where[1]}; physdiff reports no "
                            "number that is not finite")
    return flat, report, ch.state()


def mc_times(report: dict, n: int) -> np.ndarray:
    """(n,) int64: the Monte Carlo time of each configuration of a chain-major ensemble of
    ``report``: sweeps of its chain since the start (pilot and burn-in included), or the
    row within the chain when the report does not say."""
    chains = report.get("chains", 1)
    i = np.tile(np.arange(1, n // chains + 1, dtype=np.int64), chains)
    if isinstance(report.get("burn_in_sweeps"), int) and isinstance(report.get("spacing_sweeps"), int):
        return report["burn_in_sweeps"] + i * report["spacing_sweeps"]
    return i - 1


def hot_cold_check(x: np.ndarray, theory) -> dict:
    """⟨|M|⟩ and the action density of the hot-start and cold-start halves of the chains
    (x: (chains, n, L, L)), with their difference in units of the combined error."""
    half = x.shape[0] // 2
    out = {}
    V = x.shape[-1] * x.shape[-2]
    for name, fn in ((theory.monitor_name, lambda c: theory.monitor(c.reshape(-1, *c.shape[2:])).reshape(c.shape[:2])),
                     ("action_density", lambda c: theory.action(torch.from_numpy(c.reshape(-1, *c.shape[2:])))
                      .numpy().reshape(c.shape[:2]) / V)):
        hot, cold = gamma_method(fn(x[:half])), gamma_method(fn(x[half:]))
        # zero combined error (frozen chains): not comparable, z None (JSON null), never "agree"
        z = (hot.value - cold.value) / math.hypot(hot.error, cold.error) if hot.error + cold.error > 0 else None
        out[name] = {"hot": hot.value, "hot_error": hot.error, "cold": cold.value, "cold_error": cold.error, "z": z}
    zs = [v["z"] for v in out.values() if isinstance(v, dict)]
    out["comparable"] = all(z is not None for z in zs)
    out["agree"] = bool(out["comparable"] and all(abs(z) < 4 for z in zs))
    return out

"""log Z of a lattice theory at one coupling, by Monte Carlo's own estimators and by the exact
sampler, each with its error and its cost: the job behind ``physdiff free-energy``.

Every Monte Carlo estimator starts where the theory is solvable (``Theory.solvable``: φ⁴ at
κ = 0, Ising at β = 0, where log Z is closed-form and exact draws exist) and moves the parameter
p from there to the target p₁, d log Z/dp = −⟨∂S/∂p⟩ (``Theory.action_derivative``):

- ``ti``, thermodynamic integration: log Z(p₁) = log Z(p₀) − ∫ ⟨∂S/∂p⟩ dp, the integrand from a
  reference Monte Carlo ensemble (``mc.run_mcmc``) at each point of a uniform grid, integrated by
  Simpson's rule. The statistical error is Σ wᵢ² σᵢ² with σᵢ the Γ-method error of point i
  (chains as replicas); the quadrature error, reported apart and added in quadrature to the
  total, is the difference |S_h − S_2h| between Simpson on the grid and on every other point: a
  bound on S_2h's error, conservative for S_h once the integrand is resolved (Richardson's
  |S_h − S_2h| / 15 assumes that, and undercovers a grid too coarse for the integrand's bend:
  the free field at κ = 0.24 on 5 points is 0.40 off with a Richardson error of 0.05).
- ``mbar``: the same ensembles through MBAR (Shirts & Chodera, J. Chem. Phys. 129, 124105
  (2008); ``pymbar``), which uses every configuration at every coupling: reduced potentials
  u_k(x) = S_k(x), each ensemble thinned to one configuration per 2τ_int of its ∂S/∂p (MBAR's
  errors assume independent draws), log Z(p₁) = log Z(p₀) − (f₁ − f₀).
- ``jarzynski``: independent non-equilibrium trajectories (Jarzynski, PRL 78, 2690 (1997); Neal's
  annealed importance sampling, Stat. Comput. 11, 125 (2001)) from exact draws at p₀ through K
  steps of the coupling, each followed by one Monte Carlo sweep at the new coupling (HMC at a fixed
  step, tuned beforehand, and the theory's cluster update: each sweep keeps its coupling's law);
  the work W = Σ_k [S_{p_k}(x) − S_{p_{k−1}}(x)] gives log Z(p₁) − log Z(p₀) = log ⟨e^{−W}⟩,
  its error by a bootstrap over trajectories, and the Kish ESS of the weights e^{−W} (a warning
  when it is small: the error is then not to be trusted).
- ``diffusion``: the exact sampler of a trained run (``exact_sampler.sample_exact``) at the
  run's theory, log Z from its importance weights with the solver check's finer solve.

Each returns one report: ``log_z`` (value and error), the free energy density f = −log Z / V,
the method's own diagnostics and the seconds spent.

**To an error, within a budget** (``error=``, ``budget=``; ``--error``, ``--budget``): the method
first runs as given (the pilot), then grows where its error comes from until σ(log Z) ≤ error or
the next step would overrun the budget, each step sized from the errors and the seconds per
configuration measured so far, and the report says which of the two ended it:

- ti grows its grid where the integrand bends: the grid is made of Simpson panels of five nodes,
  each with its own |S₅ − S₃| (Simpson on five nodes against three), and the panel whose
  difference is largest, and larger than twice its own statistical error (a bend, not noise), is
  split in two (four new ensembles), while the quadrature error exceeds half the target; then
  every ensemble is extended (``mc.extend_mcmc``: the same chains, continued) with n_i ∝ |w_i| √v_i
  (wᵢ the node's quadrature weight, vᵢ = nᵢσᵢ² its variance per configuration), which minimises
  the configurations for a given statistical error Σ wᵢ²vᵢ/nᵢ;
- mbar extends every ensemble of its uniform grid by the factor (σ/target)²;
- jarzynski adds independent trajectories (σ ∝ 1/√trajectories; a warning of a small Kish ESS
  says that the protocol, not the count, limits it);
- diffusion draws more proposals (proposal i depends only on the seed and i, so the larger draw
  repeats the pilot's and the pilot's seconds are counted too).
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch

from ..errors import PhysdiffError
from ..stats import gamma_method
from .theory import Theory, get_theory

METHODS = ("ti", "mbar", "jarzynski", "diffusion")
MIN_POINTS = 5  # Simpson on the grid and on every other point: 1 mod 4 points, at least 5
MAX_POINTS = 1001  # a reference ensemble each: beyond it a grid is days of Monte Carlo, not a refinement
MAX_STEPS = 10**6  # jarzynski: coupling steps per trajectory, and trajectories (one sweep of all per step)
MAX_ROUNDS = 12  # of growth towards an error target: each round is sized to reach it, so a few suffice
MAX_N_PER_POINT = 10**7  # configurations of one reference ensemble grown towards a target
# Simpson on a panel's five nodes, and on its ends and middle, per unit width of the panel
SIMPSON_5 = np.array([1, 4, 2, 4, 1]) / 12
SIMPSON_3 = np.array([1, 0, 4, 0, 1]) / 6


def solvable_start(theory: Theory, parameter: str | None) -> tuple[str, float]:
    """(the parameter moved, its value at the theory's solvable point), or one line saying why
    the theory cannot be integrated from one."""
    own = type(theory).solvable
    if not own:
        raise PhysdiffError(f"theory {theory.name!r} declares no solvable point (Theory.solvable), so ti, mbar and "
                            "jarzynski have nowhere to start; the diffusion method needs none")
    if parameter is None:
        parameter = next(iter(own))
    if parameter not in own:
        raise PhysdiffError(f"theory {theory.name!r} is solvable along {', '.join(own)}, not along {parameter!r}")
    return parameter, float(own[parameter])


def ladder(theory: Theory, parameter: str, start: float, points: int) -> list[Theory]:
    """The theory at ``points`` evenly spaced values of ``parameter`` from ``start`` to its own."""
    from dataclasses import replace

    return [replace(theory, **{parameter: float(v)}) for v in np.linspace(start, getattr(theory, parameter), points)]


def _derivative(theory: Theory, x: np.ndarray, parameter: str) -> np.ndarray:
    """−∂S/∂p per configuration, float64."""
    with torch.no_grad():
        return -theory.action_derivative(torch.from_numpy(np.asarray(x, dtype=np.float64)), parameter).numpy()


class _Node:
    """One grid point's reference ensemble, which can be extended: ``mc.extend_mcmc`` continues its
    chains where they stopped, so an extended ensemble is the one a longer first run would have made."""

    def __init__(self, theory: Theory, L: int, parameter: str, n: int, *, seed: int, chains: int, cluster: bool,
                 progress):
        from .mc import mcmc_stream

        self.theory, self.parameter, self.progress = theory, parameter, progress
        t0 = time.perf_counter()
        self.x, self.report, self.state = mcmc_stream(theory, L, n, seed=seed, chains=chains, cluster=cluster,
                                                      progress=progress)
        # thermalisation included: an upper bound of what an extension costs
        self.seconds_per_config = (time.perf_counter() - t0) / len(self.x)
        self._measure()

    def _measure(self) -> None:
        chains = self.report["chains"]
        self.estimate = gamma_method(_derivative(self.theory, self.x, self.parameter).reshape(chains, -1))

    @property
    def n(self) -> int:
        return len(self.x)

    def extend(self, n: int) -> bool:
        """Continue the chains to (at least) n configurations in all (at most MAX_N_PER_POINT);
        True when the ensemble grew."""
        from .mc import extend_mcmc, rounded_n

        n = min(rounded_n(n, self.report["chains"]), MAX_N_PER_POINT)
        if n <= self.n:
            return False
        t0, old = time.perf_counter(), self.n
        self.x, self.report, self.state = extend_mcmc(self.theory, self.x, self.report, self.state, n,
                                                      progress=self.progress)
        self.seconds_per_config = (time.perf_counter() - t0) / (self.n - old)
        self._measure()
        return True


def _check_points(points) -> None:
    if not isinstance(points, int) or not MIN_POINTS <= points <= MAX_POINTS or points % 4 != 1:
        raise PhysdiffError(f"points = {points!r}: the grid needs 1 mod 4 points, {MIN_POINTS} to {MAX_POINTS} "
                            "(5, 9, 13, ...), so that Simpson's rule runs on it and on every other point")


def _check_target(error, budget) -> None:
    if error is not None and (isinstance(error, bool) or not isinstance(error, (int, float))
                              or not math.isfinite(error) or error <= 0):
        raise PhysdiffError(f"error = {error!r} (--error) must be a finite number > 0: the target σ(log Z) in nats")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget <= 0):
        raise PhysdiffError(f"budget = {budget!r} (--budget) must be a finite number of seconds > 0")


class _Clock:
    """The seconds left of a budget (None: no budget), and why growth ended."""

    def __init__(self, budget: float | None, t0: float):
        self.budget, self.t0, self.ended = budget, t0, None

    def left(self) -> float:
        return math.inf if self.budget is None else self.budget - (time.perf_counter() - self.t0)

    def affords(self, seconds: float) -> bool:
        return seconds <= self.left()

    def stop(self, otherwise: str) -> None:
        """Growth ends here: by the budget when there is one, else for the reason ``otherwise``."""
        self.ended = "the budget is spent" if self.budget is not None else otherwise


class _Grid:
    """The nodes of ti's (and mbar's) grid, keyed by their parameter value, in Simpson panels of
    five nodes [a, b] (module docstring)."""

    def __init__(self, theory: Theory, L: int, parameter: str, start: float, points: int, n: int, *, seed: int,
                 chains: int, cluster: bool, progress):
        self.theory, self.L, self.parameter, self.start = theory, L, parameter, start
        self.n0, self.seed, self.chains, self.cluster, self.progress = n, seed, chains, cluster, progress
        self.nodes: dict[float, _Node] = {}
        values = np.linspace(start, getattr(theory, parameter), points)
        self.panels = [(float(values[i]), float(values[i + 4])) for i in range(0, points - 1, 4)]
        for a, b in self.panels:  # the nodes as panel_nodes computes them: the keys every sum looks up
            for v in self.panel_nodes(a, b):
                self.node(v)

    def node(self, value: float) -> _Node:
        from dataclasses import replace

        if value not in self.nodes:
            rung = replace(self.theory, **{self.parameter: value})
            self.nodes[value] = _Node(rung, self.L, self.parameter, self.n0, seed=self.seed + len(self.nodes),
                                      chains=self.chains, cluster=self.cluster, progress=self.progress)
        return self.nodes[value]

    @staticmethod
    def panel_nodes(a: float, b: float) -> list[float]:
        return [a + (b - a) * k / 4 for k in range(4)] + [b]

    def panel_numbers(self, a: float, b: float) -> tuple[float, float]:
        """(S₅ − S₃ on panel [a, b], its statistical error)."""
        return self._linear(dict(zip(self.panel_nodes(a, b), (b - a) * (SIMPSON_5 - SIMPSON_3), strict=True)))

    def _combined(self, rule: np.ndarray) -> dict[float, float]:
        """{node: its coefficient} of ``rule`` (per unit width) summed over the panels: nodes
        shared by two panels counted once."""
        coef: dict[float, float] = {}
        for a, b in self.panels:
            for v, c in zip(self.panel_nodes(a, b), (b - a) * rule, strict=True):
                coef[v] = coef.get(v, 0.0) + float(c)
        return coef

    def _linear(self, coef: dict[float, float]) -> tuple[float, float]:
        """(Σ c_v ⟨−∂S/∂p⟩_v, its statistical error) over the nodes' independent ensembles."""
        value = sum(c * self.nodes[v].estimate.value for v, c in coef.items())
        return value, math.sqrt(sum(c**2 * self.nodes[v].estimate.error**2 for v, c in coef.items()))

    def weights(self) -> dict[float, float]:
        """Each node's weight in the composite Simpson sum over the panels."""
        return self._combined(SIMPSON_5)

    def difference(self) -> tuple[float, float]:
        """(Σ_p (S₅ − S₃) over the panels, its statistical error): the signed quadrature error and
        how much of it may be noise."""
        return self._linear(self._combined(SIMPSON_5 - SIMPSON_3))

    def integral(self) -> tuple[float, float, float]:
        """(Simpson on every node, its statistical error, the quadrature error |Σ_p (S₅ − S₃)|)."""
        total, stat = self._linear(self.weights())
        return total, stat, abs(self.difference()[0])

    def split(self, clock: _Clock) -> bool:
        """Split the panel that bends most (its |S₅ − S₃| largest and above twice its own error) if
        its four new ensembles fit the budget; True when one was split."""
        diffs = [(abs(d), d_err, (a, b)) for (a, b), (d, d_err) in
                 zip(self.panels, (self.panel_numbers(a, b) for a, b in self.panels), strict=True)]
        bends = [x for x in diffs if x[0] > 2 * x[1]]
        d, d_err = self.difference()
        if not bends and abs(d) > 2 * d_err:  # no one panel stands out, but together they bend
            bends = diffs
        if not bends or len(self.nodes) + 4 > MAX_POINTS:
            return False
        _, _, (a, b) = max(bends)
        cost = 4 * self.n0 * max(nd.seconds_per_config for nd in self.nodes.values())
        if not clock.affords(cost):
            return False
        m = (a + b) / 2
        i = self.panels.index((a, b))
        self.panels[i:i + 1] = [(a, m), (m, b)]
        for v in self.panel_nodes(a, m) + self.panel_nodes(m, b):
            self.node(v)
        return True

    def allocate(self, target: float, clock: _Clock) -> bool:
        """Extend the ensembles towards statistical error ``target`` at least cost (n_i ∝ |w_i|√v_i),
        scaled down to what the budget allows; True when any grew."""
        w = self.weights()
        v = {x: self.nodes[x].n * self.nodes[x].estimate.error**2 for x in w}
        k = sum(abs(w[x]) * math.sqrt(v[x]) for x in w) / target**2
        want = {x: max(self.nodes[x].n, math.ceil(1.05 * k * abs(w[x]) * math.sqrt(v[x]))) for x in w}
        return _extend(self.nodes, want, clock)


def _extend(nodes: dict, want: dict, clock: _Clock) -> bool:
    """Extend nodes to ``want`` configurations each, scaled down to the budget's seconds; True when any grew."""
    extra = {x: want[x] - nodes[x].n for x in want if want[x] > nodes[x].n}
    cost = sum(extra[x] * nodes[x].seconds_per_config for x in extra)
    if not extra or cost <= 0:
        return False
    scale = min(1.0, 0.9 * clock.left() / cost)
    grew = False
    for x, more in extra.items():
        m = int(more * scale)
        if m >= nodes[x].report["chains"]:
            grew = nodes[x].extend(nodes[x].n + m) or grew
    return grew


def _grown(report: dict, rounds: int, clock: _Clock, error: float | None, budget: float | None) -> dict:
    """The report with what its growth did: rounds, and why it ended."""
    if error is None and budget is None:
        return report
    reached = error is not None and report["log_z"]["error"] <= error
    reason = ("the target error is reached" if reached else clock.ended
              or (f"{MAX_ROUNDS} rounds of growth" if rounds >= MAX_ROUNDS else "the budget is spent"))
    report["diagnostics"]["growth"] = {"target_error": error, "budget_seconds": budget, "rounds": rounds,
                                       "ended": reason, "reached": reached}
    if error is not None and not reached:
        said = report["log_z"].get("warning")
        report["log_z"]["warning"] = (f"σ(log Z) = {report['log_z']['error']:.4f} is above the target {error:g}: "
                                      f"{reason}" + (f"; {said}" if said else ""))
    return report


def _ti_report(grid: _Grid, t0: float) -> dict:
    theory, L, parameter, start = grid.theory, grid.L, grid.parameter, grid.start
    integral, stat, quad = grid.integral()
    anchor = grid.nodes[start].theory.log_z_solvable(L)
    report = _report(theory, L, "ti", anchor + integral, math.hypot(stat, quad), t0)
    report["log_z"] |= {"statistical_error": stat, "quadrature_error": quad}
    values = sorted(grid.nodes)
    est = [grid.nodes[v].estimate for v in values]
    ns = [grid.nodes[v].n for v in values]
    report["diagnostics"] = {"parameter": parameter, "start": start, "log_z_start": anchor, "points": len(values),
                             "n_per_point": ns[0] if len(set(ns)) == 1 else ns, "grid": values,
                             "panels": [list(p) for p in grid.panels],
                             "d_log_z": [{"value": float(e.value), "error": float(e.error)} for e in est],
                             "coarse_grid_log_z": anchor + integral - grid.difference()[0],
                             "configurations": int(sum(ns))}
    return report


def thermodynamic_integration(theory: Theory, L: int, *, parameter: str | None = None, points: int = 9,
                              n: int = 1600, seed: int = 0, chains: int = 16, cluster: bool = True,
                              error: float | None = None, budget: float | None = None, progress=None) -> dict:
    """log Z of ``theory`` on an L×L lattice by thermodynamic integration from its solvable point
    (module docstring) on ``points`` (1 mod 4, >= 5) grid points with n configurations each; with
    ``error`` or ``budget``, grown from there (module docstring)."""
    _check_target(error, budget)
    t0 = time.perf_counter()
    parameter, start = solvable_start(theory, parameter)
    _check_points(points)
    grid = _Grid(theory, L, parameter, start, points, n, seed=seed, chains=chains, cluster=cluster,
                 progress=progress)
    clock, rounds = _Clock(budget, t0), 0
    while (error is not None or budget is not None) and rounds < MAX_ROUNDS:
        _, stat, quad = grid.integral()
        goal = 0.0 if error is None else error
        if math.hypot(stat, quad) <= goal:
            break
        rounds += 1
        if quad > max(goal / 2, stat):
            if grid.split(clock):
                continue
            target = stat / 2  # no bend to resolve: the quadrature error is noise, which statistics shrink
        else:
            target = max(math.sqrt(max(goal**2 - quad**2, 0.0)), goal / 2) if error is not None else stat / 2
        if not grid.allocate(target, clock):
            clock.stop("no ensemble can grow further")
            break
    return _grown(_ti_report(grid, t0), rounds, clock, error, budget)


def _import_pymbar():
    """pymbar, imported quietly (it prints a banner when JAX is missing)."""
    import contextlib
    import io
    import warnings

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pymbar
    except ImportError:
        raise PhysdiffError("the mbar method needs pymbar: pip install pymbar (the dev extra has it)") from None
    return pymbar


def mbar(theory: Theory, L: int, *, parameter: str | None = None, points: int = 9, n: int = 1600, seed: int = 0,
         chains: int = 16, cluster: bool = True, error: float | None = None, budget: float | None = None,
         progress=None) -> dict:
    """log Z of ``theory`` by MBAR over the ensembles of :func:`thermodynamic_integration`'s grid
    (the same seeds: the same ensembles), each thinned to one configuration per 2τ_int; with
    ``error`` or ``budget``, every ensemble extended by (σ/error)² (module docstring)."""
    _check_target(error, budget)
    pymbar = _import_pymbar()
    t0 = time.perf_counter()
    parameter, start = solvable_start(theory, parameter)
    _check_points(points)
    grid = _Grid(theory, L, parameter, start, points, n, seed=seed, chains=chains, cluster=cluster,
                 progress=progress)
    clock, rounds = _Clock(budget, t0), 0
    report = _mbar_report(grid, pymbar, t0)
    while (error is not None or budget is not None) and rounds < MAX_ROUNDS:
        sigma = report["log_z"]["error"]
        if error is not None and sigma <= error:
            break
        rounds += 1
        factor = 1.1 * (sigma / error) ** 2 if error is not None else 4.0
        if not _extend(grid.nodes, {v: math.ceil(nd.n * factor) for v, nd in grid.nodes.items()}, clock):
            clock.stop("no ensemble can grow further")
            break
        report = _mbar_report(grid, pymbar, t0)
    return _grown(report, rounds, clock, error, budget)


def _mbar_report(grid: _Grid, pymbar, t0: float) -> dict:
    import warnings

    from scipy.optimize import OptimizeWarning

    theory, L, parameter, start = grid.theory, grid.L, grid.parameter, grid.start
    values = sorted(grid.nodes)
    nodes = [grid.nodes[v] for v in values]
    ti = _ti_report(grid, t0)
    kept = []
    for nd in nodes:  # one configuration per 2τ_int of −∂S/∂p
        x, chains = nd.x, nd.report["chains"]
        per = x.reshape(chains, -1, *x.shape[1:])[:, ::max(1, math.ceil(2 * nd.estimate.tau_int))]
        kept.append(per.reshape(-1, *x.shape[1:]))
    counts = np.array([len(k) for k in kept])
    every = torch.from_numpy(np.concatenate(kept))
    with torch.no_grad():
        u = np.stack([nd.theory.action(every).numpy() for nd in nodes])  # (K, N) reduced potentials
    with warnings.catch_warnings():  # pymbar passes options newer SciPy solvers no longer take
        warnings.simplefilter("ignore", OptimizeWarning)
        out = pymbar.MBAR(u, counts).compute_free_energy_differences()
    df, ddf = float(out["Delta_f"][0, -1]), float(out["dDelta_f"][0, -1])
    anchor = ti["diagnostics"]["log_z_start"]
    report = _report(theory, L, "mbar", anchor - df, ddf, t0)
    ns = [nd.n for nd in nodes]
    report["diagnostics"] = {"parameter": parameter, "start": start, "log_z_start": anchor,
                             "points": len(nodes), "n_per_point": ns[0] if len(set(ns)) == 1 else ns,
                             "kept_per_point": counts.tolist(), "configurations": int(sum(ns)),
                             "ti_on_the_same_ensembles": ti["log_z"]}
    return report


def jarzynski(theory: Theory, L: int, *, parameter: str | None = None, trajectories: int = 256, steps: int = 200,
              seed: int = 0, cluster: bool = True, error: float | None = None, budget: float | None = None,
              progress=None) -> dict:
    """log Z of ``theory`` from ``trajectories`` non-equilibrium trajectories of ``steps`` coupling
    steps each from the solvable point (module docstring); with ``error`` or ``budget``, more
    independent trajectories added until the error or the budget is reached."""
    parameter, start = solvable_start(theory, parameter)
    if not (isinstance(trajectories, int) and 2 <= trajectories <= MAX_STEPS
            and isinstance(steps, int) and 1 <= steps <= MAX_STEPS):
        raise PhysdiffError(f"jarzynski needs 2 to {MAX_STEPS} trajectories and 1 to {MAX_STEPS} steps (got "
                            f"{trajectories} and {steps})")
    _check_target(error, budget)
    t0 = time.perf_counter()
    rungs = ladder(theory, parameter, start, steps + 1)
    works, accepted = [], []
    t = time.perf_counter()
    w, acc = _trajectories(rungs, L, trajectories, seed, cluster, progress)
    per = (time.perf_counter() - t) / trajectories
    works.append(w)
    accepted += acc
    t = time.perf_counter()
    report = _jarzynski_report(theory, L, parameter, start, rungs, works, accepted, seed, t0)
    per_report = (time.perf_counter() - t) / trajectories  # its bootstraps grow with all trajectories
    clock, rounds = _Clock(budget, t0), 0
    while (error is not None or budget is not None) and rounds < MAX_ROUNDS:
        sigma, done = report["log_z"]["error"], sum(len(w) for w in works)
        if error is not None and sigma <= error:
            break
        want = math.ceil(done * 1.1 * (sigma / error) ** 2) if error is not None else 4 * done
        affordable = int((0.9 * clock.left() - done * per_report) / (per + per_report)) \
            if clock.left() < math.inf else want
        more = min(want - done, affordable, MAX_STEPS - done)
        if more < 2:
            clock.stop(f"{MAX_STEPS} trajectories")
            break
        rounds += 1
        t = time.perf_counter()
        w, acc = _trajectories(rungs, L, more, seed + 1009 * rounds, cluster, progress)  # independent seeds
        per = (time.perf_counter() - t) / more
        works.append(w)
        accepted += acc
        t = time.perf_counter()
        report = _jarzynski_report(theory, L, parameter, start, rungs, works, accepted, seed, t0)
        per_report = (time.perf_counter() - t) / (done + more)
    return _grown(report, rounds, clock, error, budget)


def _trajectories(rungs: list[Theory], L: int, trajectories: int, seed: int, cluster: bool,
                  progress) -> tuple[np.ndarray, list]:
    """The work of ``trajectories`` independent trajectories along ``rungs``, and HMC's acceptances."""
    from ..progress import progress_bar
    from .mc import Chains

    theory = rungs[-1]
    rng = np.random.default_rng(seed)
    x = rungs[0].sample_solvable(L, trajectories, rng)
    eps, n_leap = 0.1, 10
    if theory.discrete is None:  # HMC's step tuned at the target on chains of their own, then fixed
        tuner = Chains(theory, x.copy(), seed + 1, cluster=cluster)
        for _ in range(100):
            tuner.update(tune=True)
        eps, n_leap = tuner.eps, tuner.n_leap
    chains = Chains(rungs[0], x, seed + 2, eps=eps, n_leap=n_leap, cluster=cluster)
    work = np.zeros(trajectories)
    with progress_bar(progress, len(rungs) - 1, "jarzynski", "step") as bar:
        for prev, rung in itertools.pairwise(rungs):
            with torch.no_grad():
                phi = torch.from_numpy(chains.x)
                work += (rung.action(phi) - prev.action(phi)).double().numpy()
            chains.theory = rung
            chains.update()
            bar.update(1)
    if not np.isfinite(work).all():
        raise PhysdiffError(f"jarzynski: {int((~np.isfinite(work)).sum())} trajectories have a non-finite work; "
                            "the action is not finite along the protocol")
    return work, list(chains.accepted)


def _jarzynski_report(theory: Theory, L: int, parameter: str, start: float, rungs: list, works: list,
                      accepted: list, seed: int, t0: float) -> dict:
    from ..stats import kish_ess

    work = np.concatenate(works)
    trajectories = len(work)
    log_w = -work
    top = log_w.max()
    delta = float(top + math.log(np.exp(log_w - top).mean()))
    rng = np.random.default_rng(seed + 3)  # one resample at a time: the same draws as a (500, N) matrix, without it
    draws = top + np.log([np.exp(log_w[rng.integers(trajectories, size=trajectories)] - top).mean()
                          for _ in range(500)])
    ess, ess_err = kish_ess(log_w, seed=seed)
    anchor = rungs[0].log_z_solvable(L)
    report = _report(theory, L, "jarzynski", anchor + delta, float(draws.std(ddof=1)), t0)
    report["diagnostics"] = {"parameter": parameter, "start": start, "log_z_start": anchor, "steps": len(rungs) - 1,
                             "trajectories": trajectories, "mean_work": float(work.mean()),
                             "work_std": float(work.std(ddof=1)), "ess_per_trajectory": ess,
                             "ess_per_trajectory_error": ess_err,
                             "hmc_acceptance": float(np.mean(accepted)) if accepted else None}
    if ess * trajectories < 20:
        report["log_z"]["warning"] = (f"Kish ESS {ess * trajectories:.1f} of {trajectories} trajectories: a few "
                                      "dominate and the error is not to be trusted; take more steps")
    return report


def diffusion(run, n: int = 1000, seed: int = 0, *, error: float | None = None, budget: float | None = None,
              progress=None, **options) -> dict:
    """log Z of a trained lattice run's theory from its exact sampler's importance weights, with
    the solver check's finer solve where it ran (``exact_sampler.sample_exact``); with ``error`` or
    ``budget``, drawn again with more proposals (the seconds of every draw are counted)."""
    from .exact_sampler import check_metropolis, sample_exact

    check_metropolis(run, None)
    _check_target(error, budget)
    t0 = time.perf_counter()
    clock, rounds = _Clock(budget, t0), 0
    while True:
        t = time.perf_counter()
        rep = sample_exact(run, n, seed, progress=progress, **options).report
        per = (time.perf_counter() - t) / n
        lz = rep["log_z"]  # the finer-solve value where the solver check ran (its error covers the solver)
        if (error is None and budget is None) or rounds >= MAX_ROUNDS or (error is not None and lz["error"] <= error):
            break
        want = math.ceil(n * 1.1 * (lz["error"] / error) ** 2) if error is not None else 4 * n
        want = min(want, int(0.9 * clock.left() / per) if clock.left() < math.inf else want, MAX_STEPS)
        if want <= n:
            clock.stop(f"{MAX_STEPS} proposals")
            break
        n, rounds = want, rounds + 1
    report = _report(run.theory, run.cfg.theory["L"], "diffusion", lz["value"], lz["error"], t0)
    if "warning" in lz:
        report["log_z"]["warning"] = lz["warning"]
    report["diagnostics"] = {"run": str(run.path), "proposals": n, "acceptance": rep["acceptance"],
                             "ess_per_sample": rep["ess_per_sample"], "log_z_raw": rep.get("log_z_raw", rep["log_z"]),
                             "log_q_check": rep.get("log_q_check"),
                             "training_seconds": _training_seconds(run)}
    return _grown(report, rounds, clock, error, budget)


def _training_seconds(run) -> float | None:
    """The seconds the run's training took, from its metrics.csv (its last ``elapsed_s``)."""
    from ..checkpoint import METRICS_FILE, read_metrics

    try:
        rows, _ = read_metrics(run.path / METRICS_FILE)
    except (OSError, ValueError):
        return None
    elapsed = rows.get("elapsed_s")
    return float(elapsed[-1]) if elapsed is not None and len(elapsed) else None


def _report(theory: Theory, L: int, method: str, log_z: float, error: float, t0: float) -> dict:
    if not (math.isfinite(log_z) and math.isfinite(error)):
        raise PhysdiffError(f"{method}: log Z came out {log_z} ± {error}, not a finite number")
    V = L * L
    return {"method": method, "theory": theory.params, "L": L, "log_z": {"value": log_z, "error": error},
            "free_energy_density": {"value": -log_z / V, "error": error / V},
            "seconds": time.perf_counter() - t0}


def free_energy(model: str, L: int, values: dict, method: str, *, run=None, parameter: str | None = None,
                n: int | None = None, points: int = 9, steps: int = 200, seed: int = 0, cluster: bool = True,
                error: float | None = None, budget: float | None = None, progress=None) -> dict:
    """log Z of theory ``model`` with ``values`` on an L×L lattice by ``method`` (module
    docstring). ``n``: configurations per grid point (ti, mbar; default 1600), trajectories
    (jarzynski; default 256) or proposals (diffusion; default 1000), the pilot's when ``error``
    (a target σ(log Z) in nats) or ``budget`` (seconds) grows the estimate from there; ``run``:
    the trained run of the diffusion method (its theory must be this one)."""
    _check_target(error, budget)
    target = {"error": error, "budget": budget}
    from .ensemble import check_theory_params

    if method not in METHODS:
        raise PhysdiffError(f"unknown free-energy method {method!r}; allowed: {', '.join(METHODS)}")
    theory = check_theory_params(model, L, values, prefix="--")
    if method == "diffusion":
        if run is None:
            raise PhysdiffError("the diffusion method needs a trained run of this theory (run=..., --run RUN)")
        if run.theory != theory or run.cfg.theory["L"] != L:
            raise PhysdiffError(f"run {str(run.path)!r} samples {run.theory.label}, L = {run.cfg.theory['L']}, not "
                                f"{theory.label}, L = {L}")
        return diffusion(run, n or 1000, seed, progress=progress, **target)
    if run is not None:
        raise PhysdiffError(f"a run applies to the diffusion method, not to {method}")
    if method == "jarzynski":
        return jarzynski(theory, L, parameter=parameter, trajectories=n or 256, steps=steps, seed=seed,
                         cluster=cluster, progress=progress, **target)
    estimator = thermodynamic_integration if method == "ti" else mbar
    return estimator(theory, L, parameter=parameter, points=points, n=n or 1600, seed=seed, cluster=cluster,
                     progress=progress, **target)


def format_free_energy(report: dict) -> str:
    """The report as lines: log Z, f, and the method's own numbers."""
    lz, f = report["log_z"], report["free_energy_density"]
    theory = get_theory(report["theory"]["model"])
    params = ", ".join(f"{theory.symbol(k)} = {v:g}" for k, v in report["theory"].items() if k != "model")
    lines = [f"{report['method']}: {theory.title or theory.name}, {params}, L = {report['L']}: "
             f"log Z = {lz['value']:.4f} ± {lz['error']:.4f}, f = −log Z/V = {f['value']:.6f} ± {f['error']:.6f} "
             f"({report['seconds']:.1f} s)"]
    if "quadrature_error" in lz:
        lines.append(f"  statistical error {lz['statistical_error']:.4f}, quadrature error {lz['quadrature_error']:.4f}"
                     " (Simpson against every other point)")
    d = report["diagnostics"]
    if report["method"] == "jarzynski":
        lines.append(f"  {d['trajectories']} trajectories of {d['steps']} steps: work {d['mean_work']:.3f} ± "
                     f"{d['work_std']:.3f} (spread), Kish ESS/N {d['ess_per_trajectory']:.3f}")
    if report["method"] == "mbar":
        lines.append(f"  configurations kept per point (one per 2τ_int): {d['kept_per_point']}")
    if report["method"] == "diffusion":
        lines.append(f"  {d['proposals']} proposals, acceptance {d['acceptance']:.3f}, ESS/N {d['ess_per_sample']:.3f};"
                     f" training {d['training_seconds'] or 0:.0f} s not counted above")
    if "growth" in d:
        g = d["growth"]
        goal = ", ".join(x for x in (f"target σ {g['target_error']:g}" if g["target_error"] is not None else "",
                                     f"budget {g['budget_seconds']:g} s" if g["budget_seconds"] is not None else "")
                         if x)
        unit = "trajectories" if "trajectories" in d else "proposals"
        size = (f"{d['points']} points, {d['configurations']} configurations" if "configurations" in d
                else f"{d[unit]} {unit}")
        lines.append(f"  grown in {g['rounds']} rounds ({goal}) to {size}: {g['ended']}")
    if "warning" in lz:
        lines.append(f"  warning: {lz['warning']}")
    return "\n".join(lines)

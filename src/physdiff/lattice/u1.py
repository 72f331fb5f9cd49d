"""2D U(1) lattice gauge theory with the Wilson action, registered as "u1", and its observables.

The field is a link angle per site and direction on the L×L torus: a batch is (B, 2, L, L) with
``x[:, mu, i, j]`` the angle θ_μ(i, j) ∈ (−π, π] of the link from site (i, j) in direction μ
(μ = 0 along i, the axis −2; μ = 1 along j, the axis −1). The plaquette angle is

    θ_P(i, j) = θ₀(i, j) + θ₁(i+1, j) − θ₀(i, j+1) − θ₁(i, j)   (indices periodic),

and S = −β Σ_P cos θ_P, the weight e^{−S} with respect to the Lebesgue measure on (−π, π]^{2V}
(V = L² plaquettes, 2V links). S is 2π-periodic in every angle and invariant under gauge
transformations θ_μ(x) → θ_μ(x) + α(x) − α(x+μ̂), translations, the lattice's rotations and
reflections (with the link components permuted and signed: :func:`reflect`, :func:`transpose`)
and charge conjugation θ → −θ.

Observables (vectorised over configurations): the plaquette cos θ_P averaged over the lattice;
the geometric topological charge Q = (1/2π) Σ_P wrap(θ_P), an integer (Σ_P θ_P = 0 exactly, each
link entering two plaquettes with opposite signs); χ_Q = ⟨Q²⟩/V; Wilson loops W(R×T), the mean
over positions (and the two orientations) of cos Σ_{P∈R×T} θ_P (Stokes: the product of the links
around the rectangle). :func:`u1_measure` gives them with Γ-method errors and τ_int(Q), and flags
an ensemble whose charge is frozen. Exact finite-volume results are ``exact.u1_*``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..errors import PhysdiffError
from ..stats import gamma_method
from .theory import Theory, param, register_theory

__all__ = ["U1", "plaquette_angles", "reflect", "topological_charge", "transpose", "u1_measure", "wilson_loops",
           "wrap"]

TWO_PI = 2 * math.pi
RESOLVED_TAU = 50  # τ_int(Q) counts as measured when a chain is at least this many τ_int long
MIN_CHANGES = 10  # ... and the charge changes at least this often in every chain


def _roll(x, shift: int, axis: int):
    return torch.roll(x, shift, dims=axis) if isinstance(x, torch.Tensor) else np.roll(x, shift, axis=axis)


def wrap(x):
    """Angles into (−π, π]: x − 2π ⌈(x − π)/2π⌉ (numpy or torch)."""
    ceil = torch.ceil if isinstance(x, torch.Tensor) else np.ceil
    return x - TWO_PI * ceil((x - math.pi) / TWO_PI)


def plaquette_angles(x):
    """θ_P (..., L, L) of links (..., 2, L, L), not wrapped (in (−4π, 4π] for wrapped links)."""
    t0, t1 = x[..., 0, :, :], x[..., 1, :, :]
    return t0 + _roll(t1, -1, -2) - _roll(t0, -1, -1) - t1


def topological_charge(x, rounded: bool = True) -> np.ndarray:
    """Q = (1/2π) Σ_P wrap(θ_P) per configuration, (B,) float64: an integer up to rounding, returned
    rounded (``rounded=False``: as summed, to test that it is an integer)."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    q = wrap(plaquette_angles(x.astype(np.float64))).sum((-2, -1)) / TWO_PI
    return np.rint(q) if rounded else q


def wilson_loops(x, R: int, T: int) -> np.ndarray:
    """W(R×T) per configuration (B,): cos of the plaquette angles summed over an R×T rectangle
    (R along i, T along j), averaged over its L² positions and, for R ≠ T, the two orientations."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    p = plaquette_angles(x)

    def box(a, r, t):
        s = sum(np.roll(a, -i, axis=-2) for i in range(r))
        return sum(np.roll(s, -j, axis=-1) for j in range(t))

    w = np.cos(box(p, R, T)).mean((-2, -1))
    return w if R == T else 0.5 * (w + np.cos(box(p, T, R)).mean((-2, -1)))


def transpose(x: torch.Tensor) -> torch.Tensor:
    """The reflection i ↔ j: θ′₀(i, j) = θ₁(j, i), θ′₁(i, j) = θ₀(j, i); θ′_P(i, j) = −θ_P(j, i)."""
    return x.flip(-3).transpose(-2, -1)


def reflect(x: torch.Tensor, axis: int) -> torch.Tensor:
    """The reflection of the lattice axis ``axis`` (−2: i → −i, −1: j → −j): the link along it is
    reversed, θ′_μ(x′) = −θ_μ(x − μ̂ reflected) (flip, negate), the other is carried along and
    shifted by one site (a link's origin is its lower end); θ′_P = −θ_P at the reflected plaquette."""
    mu = 0 if axis == -2 else 1
    along, other = x[..., mu, :, :], x[..., 1 - mu, :, :]
    along, other = -along.flip(axis), torch.roll(other.flip(axis), 1, dims=axis)
    return torch.stack((along, other) if mu == 0 else (other, along), dim=-3)


def gauge_transform(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """θ_μ(x) + α(x) − α(x+μ̂), α (B, L, L): S and every Wilson loop are unchanged."""
    return torch.stack((x[:, 0] + alpha - torch.roll(alpha, -1, dims=-2),
                        x[:, 1] + alpha - torch.roll(alpha, -1, dims=-1)), dim=1)


@register_theory
@dataclass(frozen=True)
class U1(Theory):
    """2D U(1) gauge theory, S = −β Σ_P cos θ_P, links (B, 2, L, L) in (−π, π] (module docstring)."""

    name: ClassVar[str] = "u1"
    title: ClassVar[str] = "U(1)"
    components: ClassVar[int] = 2
    compact: ClassVar[bool] = True
    density_label: ClassVar[str] = "action density $S/V$"

    beta: float = param(4.0, doc="u1: inverse gauge coupling β (Wilson action −β Σ_P cos θ_P)", symbol="β")
    solvable: ClassVar[dict] = {"beta": 0.0}  # β = 0: independent uniform links

    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S = −β Σ_P cos θ_P per configuration: (B, 2, L, L) → (B,)."""
        return -self.beta * torch.cos(plaquette_angles(phi)).sum(dim=(-2, -1))

    def force(self, phi: torch.Tensor) -> torch.Tensor:
        """−∂S/∂θ: θ₀(x) enters θ_P(x) with + and θ_P(x − ĵ) with −, θ₁(x) enters θ_P(x − î) with +
        and θ_P(x) with −, so with s = sin θ_P: F₀ = −β(s(x) − s(x − ĵ)), F₁ = β(s(x) − s(x − î))."""
        s = torch.sin(plaquette_angles(phi))
        return self.beta * torch.stack((torch.roll(s, 1, dims=-1) - s, s - torch.roll(s, 1, dims=-2)), dim=-3)

    def action_derivative(self, phi: torch.Tensor, parameter: str) -> torch.Tensor:
        """∂S/∂β = −Σ_P cos θ_P (B,)."""
        if parameter != "beta":
            raise PhysdiffError(f"theory 'u1' has no parameter {parameter!r}; allowed: beta")
        return -torch.cos(plaquette_angles(phi)).sum(dim=(-2, -1))

    def log_z_solvable(self, L: int) -> float:
        """At β = 0 every configuration weighs 1: log Z = 2V log 2π, the Lebesgue volume of
        (−π, π]^{2V} (V = L²; 0 with the Haar measure normalised per link). The theory's log Z is
        always this Lebesgue one, as ``exact.u1_log_z``'s default."""
        if self.beta != 0:
            raise PhysdiffError(f"U(1)'s log Z at beta = {self.beta:g} is lattice/exact.u1_log_z's (character "
                                "expansion)")
        return 2 * L * L * math.log(TWO_PI)

    def sample_solvable(self, L: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """Independent uniform angles in (−π, π] (β = 0)."""
        if self.beta != 0:
            raise PhysdiffError(f"U(1) is sampled exactly here at beta = 0, not at beta = {self.beta:g}")
        return math.pi - TWO_PI * rng.random((n, *self.field_shape(L)))

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Per configuration: a random translation, element of the lattice's rotation–reflection
        group (i ↔ j and the two axis reflections, each with probability ½: all 8), charge
        conjugation θ → −θ (probability ½), constant shift θ_μ → θ_μ + c_μ of each direction's links
        (c_μ uniform: every plaquette holds each direction once with + and once with −; it moves the
        Polyakov loops, not S) and gauge transformation (α(x) uniform), wrapped into (−π, π]. Each
        leaves S and every contractible Wilson loop unchanged; Q → ±Q."""
        B, _, L, _ = x.shape
        dev = x.device
        shift = torch.randint(L, (B, 2), generator=generator, device=dev)
        ar = torch.arange(L, device=dev)
        rows = (ar[None, :] + shift[:, :1]) % L
        cols = (ar[None, :] + shift[:, 1:]) % L
        b = torch.arange(B, device=dev)[:, None, None]
        x = x.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

        def maybe(y, fn):
            pick = torch.rand(B, generator=generator, device=dev) < 0.5
            return torch.where(pick[:, None, None, None], fn(y), y)

        x = maybe(x, transpose)
        x = maybe(x, lambda y: reflect(y, -2))
        x = maybe(x, lambda y: reflect(y, -1))
        x = maybe(x, lambda y: -y)
        shift = (torch.rand((B, 2, 1, 1), generator=generator, device=dev, dtype=x.dtype) - 0.5) * TWO_PI
        alpha = (torch.rand((B, L, L), generator=generator, device=dev, dtype=x.dtype) - 0.5) * TWO_PI
        return wrap(gauge_transform(x + shift, alpha))

    def postprocess(self, x: np.ndarray) -> np.ndarray:
        """Angles wrapped into (−π, π] (S is 2π-periodic: the same configurations)."""
        return wrap(x)

    def check_samples(self, x: np.ndarray, where: str) -> None:
        """A one-line error unless every value is an angle in (−π, π] (float32 rounding allowed)."""
        if not np.isfinite(x).all() or np.abs(x).max() > math.pi + 1e-6:
            raise PhysdiffError(f"U(1) ensemble {where} holds values outside (−π, π] (largest |θ| "
                                f"{np.nanmax(np.abs(x)):.4g}); link angles are stored wrapped (U1.postprocess)")

    def validate(self, L: int) -> None:
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise PhysdiffError(f"U(1) needs beta >= 0, not {self.beta!r}")

    def start(self, L: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        """The first half of the chains hot (uniform angles), the second half cold (every link 0)."""
        x = math.pi - TWO_PI * rng.random((chains, *self.field_shape(L)))
        x[chains // 2:] = 0.0
        return x

    monitor_name: ClassVar[str] = "abs_q"
    monitor_label: ClassVar[str] = "|Q|"

    def monitor(self, x: np.ndarray) -> np.ndarray:
        """|Q| per configuration: the slow, gauge-invariant mode the Monte Carlo's pilot times (a
        link's mean angle, the scalar default, is neither gauge invariant nor slow)."""
        return np.abs(topological_charge(np.asarray(x, dtype=np.float64))).astype(np.float64)

    def observables(self, x: np.ndarray, chains: int, where: str) -> dict:
        """:func:`u1_measure`'s table (plaquette, Q, χ_Q, Wilson loops, the frozen-charge flag)."""
        return u1_measure(x, self, chains, where)

    def plaquette(self, x) -> np.ndarray:
        """⟨cos θ_P⟩ over the lattice per configuration (B,)."""
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
        return np.cos(plaquette_angles(x)).mean((-2, -1))


def _loop_sizes(L: int) -> list[tuple[int, int]]:
    return [(r, t) for r in range(1, L // 2 + 1) for t in range(r, L // 2 + 1)]


def u1_measure(x: np.ndarray, theory: U1, chains: int = 1, where: str = "the ensemble") -> dict:
    """The U(1) observables of an ensemble x (N, 2, L, L), chain-major (``chains`` replicas), as a
    JSON-ready table {name: {value, error, tau_int, tau_int_error, window}} with Γ-method errors
    (``stats.gamma_method``, chains as replicas): "plaquette" ⟨cos θ_P⟩, "action_density" S/V,
    "Q" ⟨Q⟩, "Q2" ⟨Q²⟩, "chi_Q" ⟨Q²⟩/V, "W" {"RxT": W(R×T)} for 1 ≤ R ≤ T ≤ L/2; and the charge's
    mobility: "tau_int_Q" (τ_int of Q, in configurations), "Q_changes" (per chain, how often Q
    changes between consecutive configurations), "frozen" and "frozen_reason".

    ``frozen`` is True when Q never changes in some chain, changes fewer than MIN_CHANGES times in
    one, or a chain is shorter than RESOLVED_TAU τ_int(Q): then τ_int(Q), and so the error of
    χ_Q, is not measured; "chi_Q" and "Q" then carry ``"frozen": true`` too and must not be read as
    results (their errors are too small, or zero)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] != 2 or x.shape[-1] != x.shape[-2]:
        raise PhysdiffError(f"U(1) observables of {where}: expected links (N, 2, L, L), got {x.shape}")
    N, _, L, _ = x.shape
    if chains < 1 or N % chains or N // chains < 2:
        chains = 1
    V = L * L
    q = topological_charge(x)

    def est(a):
        return gamma_method(np.asarray(a, dtype=np.float64).reshape(chains, -1)).as_dict()

    with torch.no_grad():
        s = theory.density(torch.from_numpy(x)).numpy()
    table = {"plaquette": est(theory.plaquette(x)), "action_density": est(s), "Q": est(q), "Q2": est(q**2),
             "chi_Q": est(q**2 / V), "W": {f"{r}x{t}": est(wilson_loops(x, r, t)) for r, t in _loop_sizes(L)}}
    per_chain = q.reshape(chains, -1)
    changes = [int(c) for c in (np.diff(per_chain, axis=1) != 0).sum(1)]
    tau = table["Q"]["tau_int"]
    reason = None
    if min(changes) == 0:
        reason = f"Q never changes in {sum(c == 0 for c in changes)} of the {chains} chains"
    elif min(changes) < MIN_CHANGES:
        reason = f"Q changes only {min(changes)} times in one chain (fewer than {MIN_CHANGES})"
    elif per_chain.shape[1] < RESOLVED_TAU * tau:
        reason = (f"τ_int(Q) = {tau:.3g} configurations is not resolved by chains of {per_chain.shape[1]} "
                  f"(fewer than {RESOLVED_TAU} τ_int)")
    table |= {"tau_int_Q": tau, "Q_changes": changes, "frozen": reason is not None, "frozen_reason": reason}
    if reason is not None:
        for key in ("Q", "Q2", "chi_Q"):
            table[key]["frozen"] = True
    return table

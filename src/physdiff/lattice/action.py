"""The built-in lattice theories on an L×L periodic lattice; configurations are tensors (B, L, L).

Real scalar φ⁴ in the hopping form (the convention of Wolff's and Vierhaus's φ⁴ studies, and of
Albergo, Kanwar & Shanahan 2019):

    S(φ) = Σ_x [ −2κ Σ_μ φ_x φ_{x+μ̂} + (1 − 2λ) φ_x² + λ φ_x⁴ ],

μ over the two positive directions, so each nearest-neighbour bond appears once. At λ = 0 it is
the free field S = ½ φᵀKφ with K = 2(1 − κ Σ_μ (T_μ + T_μ⁻¹)), stable for κ < 1/4.

The 2D Ising model: weight e^{β Σ_⟨xy⟩ s_x s_y}, s = ±1, energy E = −Σ_⟨xy⟩ s_x s_y.

Both implement the contract of ``theory.py`` and are registered as "phi4" and "ising".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..errors import PhysdiffError
from .theory import Theory, all_neighbours, neighbour_sum, param, register_theory

__all__ = ["Ising", "Phi4", "all_neighbours", "free_field_propagator", "neighbour_sum"]


@register_theory
@dataclass(frozen=True)
class Phi4(Theory):
    """φ⁴ theory in the hopping form with hopping parameter κ and coupling λ (module docstring)."""

    name: ClassVar[str] = "phi4"
    title: ClassVar[str] = "φ⁴"

    kappa: float = param(0.2705, doc="phi4: hopping parameter κ", symbol="κ")
    lam: float = param(0.022, doc="phi4: quartic coupling λ", symbol="λ")
    solvable: ClassVar[dict] = {"kappa": 0.0}  # κ = 0: independent sites

    def log_z_solvable(self, L: int) -> float:
        """At κ = 0 the sites are independent: log Z = V log ∫ dφ e^{−(1−2λ)φ² − λφ⁴}
        = V log ∫ dφ e^{λ − φ² − λ(φ²−1)²}, the one-dimensional integral by adaptive quadrature
        (scipy.integrate.quad; √π at λ = 0)."""
        from scipy.integrate import quad

        if self.kappa != 0:
            raise PhysdiffError(f"φ⁴'s log Z is known in closed form at kappa = 0, not at kappa = {self.kappa:g}")
        lam = self.lam
        one, _ = quad(lambda p: math.exp(-p * p - lam * (p * p - 1) ** 2), -math.inf, math.inf,
                      epsabs=0, epsrel=2e-14, limit=200)
        return L * L * (lam + math.log(one))

    def sample_solvable(self, L: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """Exact draws at κ = 0 by rejection: φ ~ N(0, ½) (density ∝ e^{−φ²}), kept with
        probability e^{−λ(φ²−1)²} ≤ 1, which leaves e^{−φ² − λ(φ²−1)²} ∝ e^{−(1−2λ)φ² − λφ⁴}."""
        if self.kappa != 0:
            raise PhysdiffError(f"φ⁴ is sampled exactly at kappa = 0, not at kappa = {self.kappa:g}")
        need, out = n * L * L, []
        while need > 0:
            phi = rng.normal(0.0, math.sqrt(0.5), size=max(2 * need, 1024))
            phi = phi[rng.random(phi.shape) < np.exp(-self.lam * (phi * phi - 1) ** 2)][:need]
            out.append(phi)
            need -= len(phi)
        return np.concatenate(out).reshape(n, L, L)

    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S(φ) per configuration: (B, L, L) → (B,)."""
        kinetic = -2.0 * self.kappa * (phi * neighbour_sum(phi))
        local = (1.0 - 2.0 * self.lam) * phi**2 + self.lam * phi**4
        return (kinetic + local).sum(dim=(-2, -1))

    def force(self, phi: torch.Tensor) -> torch.Tensor:
        """−∂S/∂φ_x = 2κ Σ_{±μ} φ_{x±μ̂} − 2(1 − 2λ) φ_x − 4λ φ_x³: (B, L, L)."""
        return 2.0 * self.kappa * all_neighbours(phi) - 2.0 * (1.0 - 2.0 * self.lam) * phi - 4.0 * self.lam * phi**3

    def cluster_update(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Wolff update of the embedded Ising signs (Brower & Tamayo 1989): the term
        −2κ φ_x φ_y = −2κ|φ_x||φ_y| s_x s_y makes the signs an Ising model with β_xy = 2κ|φ_x||φ_y|."""
        from .mc import wolff_update

        if self.kappa == 0:
            return x
        a = np.abs(x)
        return wolff_update(x, (2 * self.kappa * a * np.roll(a, -1, axis=-1),
                                2 * self.kappa * a * np.roll(a, -1, axis=-2)), rng)

    def validate(self, L: int) -> None:
        # at λ = 0 the action is the Gaussian ½ φᵀKφ, whose smallest eigenvalue 2(1 − 4κ) (p = 0)
        # must be positive; any λ > 0 bounds it from below
        if self.lam == 0 and self.kappa >= 0.25:
            raise PhysdiffError(f"φ⁴ with lam = 0 is the free field, normalisable only for kappa < 0.25; "
                                f"kappa = {self.kappa:g} has no probability law (give lam > 0 or a smaller kappa)")


@register_theory
@dataclass(frozen=True)
class Ising(Theory):
    """The 2D Ising model at inverse temperature β (J = 1, no field)."""

    name: ClassVar[str] = "ising"
    title: ClassVar[str] = "Ising"
    discrete: ClassVar[tuple[float, ...]] = (-1.0, 1.0)
    density_label: ClassVar[str] = "energy density $E/V$"
    # runs train on the Hubbard–Stratonovich variable by default (a continuous field with a large
    # Gaussian part: the lattice defaults, Gaussian part and site network, apply); with
    # data.embedding = "none" they learn the spins themselves, read back through the sign
    embeddings: ClassVar[tuple[str, ...]] = ("hubbard-stratonovich",)
    default_embedding: ClassVar[str] = "hubbard-stratonovich"

    beta: float = param(0.44, doc="ising: inverse temperature β", symbol="β")
    solvable: ClassVar[dict] = {"beta": 0.0}  # β = 0: independent spins

    def log_z_solvable(self, L: int) -> float:
        """At β = 0 every one of the 2^V configurations weighs 1: log Z = V log 2."""
        if self.beta != 0:
            raise PhysdiffError(f"Ising's log Z at beta = {self.beta:g} is lattice/exact.ising_log_z's (Kaufman)")
        return L * L * math.log(2.0)

    def sample_solvable(self, L: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """Independent uniform spins ±1 (β = 0)."""
        if self.beta != 0:
            raise PhysdiffError(f"Ising is sampled exactly here at beta = 0, not at beta = {self.beta:g}")
        return rng.choice([-1.0, 1.0], size=(n, L, L))

    @classmethod
    def critical_point(cls, parameter: str, fixed: dict) -> tuple[float, str] | None:
        """Onsager's β_c = ½ ln(1 + √2) (Onsager 1944), the infinite-volume critical coupling."""
        if parameter == "beta":
            return 0.5 * math.log(1 + math.sqrt(2)), "Onsager's β_c (L = ∞)"
        return None

    @classmethod
    def presets_for(cls, embedding: str) -> dict:
        # spins themselves keep the flattened MLP alone: with the Gaussian part and the site network
        # the sign-read energy moved from +30 to +62 errors at β = 0.3 and from +4 to +22 at β = 0.44
        # (GPU run, benchmarks/README.md)
        return {"model": {"arch": "mlp", "gaussian": "none", "mlp": {"site_width": 0}}} if embedding == "none" else {}

    def embedding(self, name: str, L: int, shift: float = 1.0):
        """"hubbard-stratonovich": x with p(x) ∝ exp(−½ xᵀW⁻¹x) Π 2cosh x, W = βJ + (4β + shift)I
        (``embedding.HubbardStratonovich``); "none": None."""
        if name == "hubbard-stratonovich":
            from .embedding import HubbardStratonovich

            return HubbardStratonovich(self.beta, L, shift)
        return super().embedding(name, L, shift)

    def energy(self, s: torch.Tensor) -> torch.Tensor:
        """E = −Σ_⟨xy⟩ s_x s_y per configuration: (B, L, L) → (B,)."""
        return -(s * neighbour_sum(s)).sum(dim=(-2, -1))

    def action(self, s: torch.Tensor) -> torch.Tensor:
        """S = β E, so the weight is e^{−S}."""
        return self.beta * self.energy(s)

    def density(self, s: torch.Tensor) -> torch.Tensor:
        """The energy density E/V (the observable tables call it the action density)."""
        return self.energy(s) / (s.shape[-1] * s.shape[-2])

    def cluster_update(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The Wolff algorithm (Wolff 1989): bonds between equal spins with p = 1 − e^{−2β}."""
        from .mc import wolff_update

        full = np.full(x.shape, self.beta)
        return wolff_update(x, (full, full), rng)


def free_field_propagator(L: int, kappa: float) -> torch.Tensor:
    """⟨φ_0 φ_r⟩ of the free field (λ = 0) on the L×L torus, (L, L) float64: the inverse of
    K(p) = 2(1 − 2κ Σ_μ cos p_μ), p_μ = 2πn/L, transformed back to position space."""
    p = 2 * torch.pi * torch.arange(L, dtype=torch.float64) / L
    k = 2.0 * (1.0 - 2.0 * kappa * (torch.cos(p)[:, None] + torch.cos(p)[None, :]))
    return torch.fft.ifft2(1.0 / k).real

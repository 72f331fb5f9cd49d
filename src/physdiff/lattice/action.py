"""Lattice actions on an L×L periodic lattice; configurations are tensors (B, L, L).

Real scalar φ⁴ in the hopping form (the convention of Wolff's and Vierhaus's φ⁴ studies, and of
Albergo, Kanwar & Shanahan 2019):

    S(φ) = Σ_x [ −2κ Σ_μ φ_x φ_{x+μ̂} + (1 − 2λ) φ_x² + λ φ_x⁴ ],

μ over the two positive directions, so each nearest-neighbour bond appears once. At λ = 0 it is
the free field S = ½ φᵀKφ with K = 2(1 − κ Σ_μ (T_μ + T_μ⁻¹)), stable for κ < 1/4.

The 2D Ising model: weight e^{β Σ_⟨xy⟩ s_x s_y}, s = ±1, energy E = −Σ_⟨xy⟩ s_x s_y.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def neighbour_sum(phi: torch.Tensor) -> torch.Tensor:
    """Σ_μ φ_{x+μ̂} over the two positive directions, periodic: (B, L, L) → (B, L, L)."""
    return torch.roll(phi, -1, dims=-1) + torch.roll(phi, -1, dims=-2)


def all_neighbours(phi: torch.Tensor) -> torch.Tensor:
    """Σ_{±μ} φ_{x±μ̂}, the four nearest neighbours: (B, L, L) → (B, L, L)."""
    return (torch.roll(phi, 1, dims=-1) + torch.roll(phi, -1, dims=-1)
            + torch.roll(phi, 1, dims=-2) + torch.roll(phi, -1, dims=-2))


@dataclass(frozen=True)
class Phi4:
    """φ⁴ theory in the hopping form with hopping parameter κ and coupling λ (module docstring)."""

    kappa: float
    lam: float

    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S(φ) per configuration: (B, L, L) → (B,)."""
        kinetic = -2.0 * self.kappa * (phi * neighbour_sum(phi))
        local = (1.0 - 2.0 * self.lam) * phi**2 + self.lam * phi**4
        return (kinetic + local).sum(dim=(-2, -1))

    def force(self, phi: torch.Tensor) -> torch.Tensor:
        """−∂S/∂φ_x = 2κ Σ_{±μ} φ_{x±μ̂} − 2(1 − 2λ) φ_x − 4λ φ_x³: (B, L, L)."""
        return 2.0 * self.kappa * all_neighbours(phi) - 2.0 * (1.0 - 2.0 * self.lam) * phi - 4.0 * self.lam * phi**3

    @property
    def params(self) -> dict:
        return {"model": "phi4", "kappa": self.kappa, "lam": self.lam}

    @property
    def label(self) -> str:
        return f"φ⁴, κ = {self.kappa:g}, λ = {self.lam:g}"

    density_label = "action density $S/V$"


@dataclass(frozen=True)
class Ising:
    """The 2D Ising model at inverse temperature β (J = 1, no field)."""

    beta: float

    def energy(self, s: torch.Tensor) -> torch.Tensor:
        """E = −Σ_⟨xy⟩ s_x s_y per configuration: (B, L, L) → (B,)."""
        return -(s * neighbour_sum(s)).sum(dim=(-2, -1))

    def action(self, s: torch.Tensor) -> torch.Tensor:
        """S = β E, so the weight is e^{−S}."""
        return self.beta * self.energy(s)

    @property
    def params(self) -> dict:
        return {"model": "ising", "beta": self.beta}

    @property
    def label(self) -> str:
        return f"Ising, β = {self.beta:g}"

    density_label = "energy density $E/V$"


def free_field_propagator(L: int, kappa: float) -> torch.Tensor:
    """⟨φ_0 φ_r⟩ of the free field (λ = 0) on the L×L torus, (L, L) float64: the inverse of
    K(p) = 2(1 − 2κ Σ_μ cos p_μ), p_μ = 2πn/L, transformed back to position space."""
    p = 2 * torch.pi * torch.arange(L, dtype=torch.float64) / L
    k = 2.0 * (1.0 - 2.0 * kappa * (torch.cos(p)[:, None] + torch.cos(p)[None, :]))
    return torch.fft.ifft2(1.0 / k).real

"""Exact results the reference Monte Carlo is checked against.

- 2D Ising on the L×L torus: the finite-lattice partition function of Kaufman (1949), in the
  form of Ferdinand & Fisher (1969, eqs. 2.1–2.5), and brute-force enumeration for L ≤ 4.
- Free field: the propagator (``action.free_field_propagator``) and log Z, the Gaussian integral.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def _log_prod(terms: np.ndarray) -> tuple[float, float]:
    """(log |Π t|, sign of Π t)."""
    return float(np.log(np.abs(terms)).sum()), float(np.prod(np.sign(terms)))


def ising_log_z(L: int, beta: float) -> float:
    """log Z of the L×L periodic Ising model (J = 1) at coupling K = β:
    Z = ½ (2 sinh 2K)^{L²/2} (Z₁ + Z₂ + Z₃ + Z₄),
    Z₁,₂ = Π_{r=0}^{L−1} 2 cosh, sinh(L γ_{2r+1}/2),  Z₃,₄ = Π_{r=0}^{L−1} 2 cosh, sinh(L γ_{2r}/2),
    cosh γ_l = cosh 2K coth 2K − cos(π l / L) for l ≥ 1, and γ₀ = 2K + ln tanh K (signed)."""
    K = beta
    n = L
    ls = np.arange(2 * n)
    gam = np.arccosh(np.cosh(2 * K) / np.tanh(2 * K) - np.cos(np.pi * ls / n))
    gam[0] = 2 * K + math.log(math.tanh(K))
    odd, even = gam[1::2], gam[0::2]
    parts = [_log_prod(2 * np.cosh(L * odd / 2)), _log_prod(2 * np.sinh(L * odd / 2)),
             _log_prod(2 * np.cosh(L * even / 2)), _log_prod(2 * np.sinh(L * even / 2))]
    top = max(p[0] for p in parts)
    total = sum(sign * math.exp(lg - top) for lg, sign in parts)
    return math.log(0.5) + 0.5 * L * L * math.log(2 * math.sinh(2 * K)) + top + math.log(total)


def ising_energy_density(L: int, beta: float, h: float = 1e-5) -> float:
    """⟨E⟩/V = −(1/V) ∂ log Z/∂β, by a central difference of the exact log Z."""
    return -(ising_log_z(L, beta + h) - ising_log_z(L, beta - h)) / (2 * h) / (L * L)


def ising_enumerate(L: int, beta: float) -> dict:
    """⟨E⟩/V, ⟨|M|⟩ and ⟨M²⟩ (M the mean spin) by summing over all 2^{L²} states (L ≤ 4)."""
    if L > 4:
        raise ValueError("enumeration is for L <= 4")
    states = np.array(list(itertools.product([-1.0, 1.0], repeat=L * L))).reshape(-1, L, L)
    energy = -(states * (np.roll(states, -1, -1) + np.roll(states, -1, -2))).sum((1, 2))
    m = states.mean((1, 2))
    logw = -beta * energy
    w = np.exp(logw - logw.max())
    w /= w.sum()
    return {"energy_density": float((w * energy).sum() / (L * L)), "abs_m": float((w * np.abs(m)).sum()),
            "m2": float((w * m**2).sum()), "log_z": float(np.log(np.exp(logw - logw.max()).sum()) + logw.max())}


def free_field_log_z(L: int, kappa: float) -> float:
    """log Z = log ∫ Π_x dφ_x e^{−S} of the free field (φ⁴ at λ = 0) on the L×L torus:
    S = ½ φᵀAφ with A = 2(1 − κ Σ_μ (T_μ + T_μ⁻¹)), eigenvalues 2(1 − 2κ(cos p₁ + cos p₂)) on
    p_μ = 2πn/L, so log Z = (V/2) log 2π − ½ Σ_p log A(p) (finite for κ < 1/4)."""
    if not 0 <= kappa < 0.25:
        raise ValueError("the free field is normalisable for 0 <= kappa < 1/4")
    c = np.cos(2 * np.pi * np.arange(L) / L)
    a = 2.0 * (1.0 - 2.0 * kappa * (c[:, None] + c[None, :]))
    return 0.5 * L * L * math.log(2 * math.pi) - 0.5 * float(np.log(a).sum())

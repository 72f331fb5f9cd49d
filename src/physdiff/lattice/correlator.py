"""The zero-momentum time-slice correlator (Γ-method errors) and its effective mass (blocked jackknife).

With φ̄(t) = (1/L) Σ_x φ(x, t), the mean of time slice t of an L×L periodic configuration,

    C(t) = (1/L) Σ_{t₀} ⟨φ̄(t₀) φ̄(t₀ + t)⟩ − c²,   t = 0..L/2,

both lattice axes taken in turn as time and averaged (the lattice's symmetry). Projecting on
zero spatial momentum leaves one state per energy level: for a theory with a mass gap
C(t) ∝ cosh(m (t − L/2)) + (heavier states), so the periodic ("cosh") effective mass

    m_eff(t) = arccosh((C(t+1) + C(t−1)) / (2 C(t))),   t = 1..L/2 (C(L/2+1) = C(L/2−1)),

is exactly m for a single state and approaches the lightest mass from above (Gattringer & Lang,
"Quantum Chromodynamics on the Lattice", sec. 6.4, the periodic case). For the free field
S = ½ Σ φ(−Δ + m₀²)φ on the torus, C(t) = cosh(E(t − L/2)) / (2 L sinh E sinh(E L/2)) with
cosh E = 1 + m₀²/2: m_eff(t) = E at every t (tests/test_correlator.py).

The subtracted constant c²: ⟨M⟩ is 0 by the φ → −φ symmetry in a finite volume (the ensemble
tunnels, or is symmetrised), so subtracting ⟨M⟩² removes nothing; in the broken phase the full
correlator then has a plateau at ≈ ⟨M²⟩ and m_eff → 0 (tunnelling, not a mass). ``subtract =
"abs_m"`` takes c = ⟨|M|⟩, the magnetisation of one vacuum, which removes that disconnected part
in the broken phase (as χ_c does); in the symmetric phase it over-subtracts by an O(χ₂/V)
constant, bending C(t) down near t = L/2, and ``subtract = "m"`` (c = ⟨M⟩) is the right one.
:func:`default_subtraction` picks by the Binder cumulant.
"""

from __future__ import annotations

import math

import numpy as np

from ..stats import Estimate, derived

# Binder cumulant at the 2D Ising fixed point (Salas & Sokal 2000: U* = 0.61069...): above it, an
# ensemble is on the ordered side and ⟨|M|⟩² is its disconnected part
BINDER_ORDERED = 0.6107


def default_subtraction(binder: float) -> str:
    """"abs_m" (subtract ⟨|M|⟩²) on the ordered side of the Binder cumulant's fixed point, else "m"."""
    return "abs_m" if binder > BINDER_ORDERED else "m"


def slice_products(x: np.ndarray) -> np.ndarray:
    """(N, L//2 + 1): per configuration, (1/L) Σ_{t₀} φ̄(t₀) φ̄(t₀ + t), averaged over the two
    axes as time. x: (N, L, L)."""
    L = x.shape[-1]
    rows, cols = x.mean(axis=2), x.mean(axis=1)  # φ̄(t) with t along axis 1, and along axis 2
    return np.stack([0.5 * ((rows * np.roll(rows, -t, 1)).mean(1) + (cols * np.roll(cols, -t, 1)).mean(1))
                     for t in range(L // 2 + 1)], axis=1)


def effective_mass_value(c_prev: float, c: float, c_next: float) -> float:
    """arccosh((C(t+1) + C(t−1)) / (2 C(t))); NaN where the argument is below 1 (noise) or C(t) ≤ 0."""
    if not c > 0:
        return math.nan
    arg = (c_next + c_prev) / (2 * c)
    return math.acosh(arg) if arg >= 1 else math.nan


def timeslice_correlator(x: np.ndarray, chains: int = 1, subtract: str = "m",
                         n_blocks: int = 20) -> dict[str, list[Estimate]]:
    """{"C": [C(t), t = 0..L/2], "m_eff": [m_eff(t), t = 1..L/2]} of the module docstring, each an
    Estimate over configurations: C(t) with its Γ-method error (Wolff 2004), the ensemble's
    ``chains`` as replicas (chain-major, as ``observables.measure``); m_eff(t) with the error of a
    jackknife over ``n_blocks`` contiguous blocks (:func:`block_means`; its τ_int NaN: not
    measured), NaN where a block's replica has no effective mass (C(t) ≤ 0, or an argument < 1:
    the signal is lost in the noise). x: (N, L, L)."""
    if subtract not in ("m", "abs_m"):
        raise ValueError(f"subtract = {subtract!r}; allowed: m, abs_m")
    N, L, _ = x.shape
    if N % chains:
        chains = 1
    m = x.reshape(N, -1).mean(1)
    c = np.abs(m) if subtract == "abs_m" else m
    prod = slice_products(x).reshape(chains, -1, L // 2 + 1)
    c = c.reshape(chains, -1)
    half = L // 2
    corr = [derived(lambda a: a[0] - a[1] ** 2, [prod[..., t], c]) for t in range(half + 1)]

    # m_eff: a blocked jackknife, not the linearised Γ-method: near a plateau the arccosh argument is
    # within its noise of 1, where the derivative blows up and a finite-difference gradient lands on
    # NaN; the jackknife's leave-one-block-out means stay close to the full mean
    blocks = block_means(np.concatenate([prod.reshape(N, -1), c.reshape(N, 1)], axis=1), n_blocks)
    means = blocks.mean(0)
    leave_one_out = (blocks.sum(0)[None] - blocks) / (len(blocks) - 1)

    def m_eff(a, t):  # a = (⟨c_0⟩, ..., ⟨c_{L/2}⟩, ⟨c⟩)
        sub = a[-1] ** 2
        nxt = t + 1 if t < half else t - 1  # periodicity: C(L/2 + 1) = C(L/2 − 1)
        return effective_mass_value(a[t - 1] - sub, a[t] - sub, a[nxt] - sub)

    masses = []
    for t in range(1, half + 1):
        jack = np.array([m_eff(a, t) for a in leave_one_out])
        b = len(jack)
        error = math.sqrt((b - 1) / b * np.sum((jack - jack.mean()) ** 2))  # NaN if any replica is undefined
        masses.append(Estimate(m_eff(means, t), error, math.nan, math.nan, 0))
    return {"C": corr, "m_eff": masses}


def block_means(a: np.ndarray, n_blocks: int) -> np.ndarray:
    """(B, k) means of B contiguous blocks of the rows of a (N, k) (B = min(n_blocks, N // 2); the
    last N mod B rows dropped): blocks much longer than τ_int are independent, so a jackknife over
    them carries the autocorrelation (Wolff 2004, sec. 2.3; Gattringer & Lang sec. 4.5)."""
    b = max(2, min(n_blocks, len(a) // 2))
    size = len(a) // b
    return a[: b * size].reshape(b, size, -1).mean(1)


__all__ = ["BINDER_ORDERED", "default_subtraction", "effective_mass_value", "slice_products", "timeslice_correlator"]

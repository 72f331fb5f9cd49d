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


# ---------------------------------------------------------------------------------------------
# 2D U(1) lattice gauge theory with the Wilson action S = −β Σ_P cos θ_P on the L×L torus
# (``u1.py``): V = L² plaquettes, 2V links.
#
# Character expansion (e.g. Drouffe & Zuber, Phys. Rep. 102 (1983) 1, sec. 2; Bonati & Rossi,
# PRD 99 (2019) 054503, arXiv:1901.09830, sec. II; used as the exact reference of Kanwar et al.,
# PRL 125 (2020) 121601): e^{β cos θ} = Σ_n I_n(β) e^{inθ}; every link lies on two plaquettes with
# opposite orientations, so integrating it (Haar measure dθ/2π) forces equal n on neighbouring
# plaquettes, and on the torus
#
#     Z_Haar = ∫ Π_links dθ/2π e^{−S} = Σ_{n∈ℤ} I_n(β)^V.
#
# The theory's (and the Monte Carlo's, and physdiff's free-energy estimators') Z is the Lebesgue
# integral over (−π, π]^{2V}, Z = (2π)^{2V} Z_Haar: ``u1_log_z(..., measure="lebesgue")``, the default.
# Everything else here is a ratio and does not depend on the convention.
#
# Bessel functions are used exponentially scaled, ive(n, β) = I_n(β) e^{−β} (scipy.special.ive),
# and the sums over n run in ratios a_n = I_n/I_0 ∈ [0, 1], until a_n^{V−2} < 1e-300·(nothing left).
# ---------------------------------------------------------------------------------------------

_U1_TAIL = 1e-18  # a term of a sum over n is dropped once it is below this fraction of the n = 0 term


def _u1_check(L: int, beta: float) -> int:
    if isinstance(L, bool) or not isinstance(L, int | np.integer) or L < 2:
        raise ValueError(f"L = {L!r}: the U(1) results are for an integer L >= 2")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta = {beta!r}: the U(1) results are for a finite beta >= 0")
    return int(L) * int(L)


def _u1_orders(beta: float, power: int, extra: int = 1) -> np.ndarray:
    """n = 0, 1, ..., N: far enough that (I_N/I_0)^power < _U1_TAIL (I_n/I_0 decreases in |n|;
    ≈ e^{−n²/2β} at large β, (β/2)^n/n! at small β), plus ``extra`` orders."""
    from scipy.special import ive

    if beta == 0:
        return np.arange(1 + extra)
    n = 1
    i0 = ive(0, beta)
    while n < 100000 and (ive(n, beta) / i0) ** max(power, 1) > _U1_TAIL:
        n = max(n + 1, int(n * 1.25))
    return np.arange(n + 1 + extra)


def _u1_ratios(beta: float, n: np.ndarray) -> np.ndarray:
    """a_n = I_n(β)/I_0(β) for n ≥ 0 (a_n = δ_{n0} at β = 0)."""
    from scipy.special import ive

    if beta == 0:
        return (n == 0).astype(np.float64)
    return ive(n, beta) / ive(0, beta)


def _symmetric_sum(terms: np.ndarray) -> float:
    """Σ_{n∈ℤ} t_|n| from t_0, t_1, ... (terms even in n)."""
    return float(terms[0] + 2.0 * terms[1:].sum())


def u1_log_z(L: int, beta: float, measure: str = "lebesgue") -> float:
    """log Z of 2D U(1) (Wilson action) on the L×L torus, V = L²: log Σ_n I_n(β)^V with the Haar
    measure normalised per link (``measure="haar"``), plus 2V log 2π for the theory's Lebesgue
    measure over (−π, π]^{2V} (``"lebesgue"``, the convention of ``U1.log_z_solvable`` and the
    free-energy estimators). Stable: V log I_0 = V(log ive(0, β) + β) plus log Σ_n (I_n/I_0)^V."""
    from scipy.special import ive

    V = _u1_check(L, beta)
    if measure not in ("lebesgue", "haar"):
        raise ValueError(f"measure = {measure!r}; allowed: 'lebesgue', 'haar'")
    n = _u1_orders(beta, V)
    a = _u1_ratios(beta, n)
    log_z = V * (math.log(ive(0, beta)) + beta) + math.log(_symmetric_sum(a**V))
    return log_z + (2 * V * math.log(2 * math.pi) if measure == "lebesgue" else 0.0)


def u1_wilson_loop(L: int, beta: float, area: int) -> float:
    """⟨Re Π_{P∈A} e^{iθ_P}⟩ for any region A of ``area`` plaquettes (an R×T Wilson loop: area RT):
    Σ_n I_n^{V−A} I_{n+1}^A / Σ_n I_n^V (the plaquettes inside carry the representation n+1, those
    outside n). → (I_1/I_0)^A at large V (the area law of 2D)."""
    V = _u1_check(L, beta)
    if isinstance(area, bool) or not isinstance(area, int | np.integer) or not 0 <= area <= V:
        raise ValueError(f"area = {area!r}: a region of 0 to V = {V} plaquettes")
    n = _u1_orders(beta, V, extra=2)
    a = _u1_ratios(beta, n)
    full = np.concatenate([a[:0:-1], a])  # a_|n| for n = −N..N
    num = float((full[:-1] ** (V - area) * full[1:] ** area).sum())
    return num / _symmetric_sum(a[:-1] ** V)


def u1_plaquette(L: int, beta: float) -> float:
    """⟨cos θ_P⟩ = (1/V) ∂ log Z/∂β = Σ_n I_n′ I_n^{V−1} / Σ_n I_n^V, I_n′ = (I_{n−1} + I_{n+1})/2;
    the same as the 1×1 Wilson loop (n → −n). → I_1(β)/I_0(β) at large V; ≈ β/2 at small β,
    ≈ 1 − 1/(2β) at large β."""
    V = _u1_check(L, beta)
    n = _u1_orders(beta, V, extra=2)
    a = _u1_ratios(beta, n)
    full = np.concatenate([a[:0:-1], a])  # n = −N..N
    deriv = 0.5 * (full[:-2] + full[2:])  # a′_n for n = −N+1..N−1
    num = float((deriv * full[1:-1] ** (V - 1)).sum())
    return num / _symmetric_sum(a[:-1] ** V)


def u1_theta2(beta: float) -> float:
    """⟨θ²⟩ of one angle θ ∈ (−π, π] with weight e^{β cos θ}: from the Fourier series
    θ² = π²/3 + 4 Σ_{n≥1} (−1)^n cos(nθ)/n², ⟨θ²⟩ = π²/3 + 4 Σ_{n≥1} (−1)^n I_n(β)/(n² I_0(β))."""
    n = np.arange(1, 200000) if beta > 2000 else np.arange(1, 20001)
    a = _u1_ratios(beta, n)
    return float(math.pi**2 / 3 + 4 * ((-1.0) ** n * a / n**2)[::-1].sum())


def u1_chi_q_infinite(beta: float) -> float:
    """The infinite-volume topological susceptibility (per plaquette) of the geometric charge:
    χ_Q = ⟨θ²⟩/(4π²) with θ ∈ (−π, π] of weight e^{β cos θ} (the plaquettes decouple at V → ∞;
    Bonati & Rossi, PRD 99 (2019) 054503, sec. III). ≈ 1/(4π²β) at large β, 1/12 at β = 0."""
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta = {beta!r}: a finite beta >= 0")
    return u1_theta2(beta) / (4 * math.pi**2)


def _gauss_legendre_half(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on [0, π]."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    return 0.5 * math.pi * (t + 1), 0.5 * math.pi * w


def u1_topological_susceptibility(L: int, beta: float) -> float:
    """χ_Q = ⟨Q²⟩/V of the geometric charge Q = (1/2π) Σ_P wrap(θ_P) on the L×L torus, from the
    θ-dependent partition function (Bonati & Rossi 2019, eqs. for U(1)): with
    ĝ(k) = ∫_{−π}^{π} dθ e^{β cos θ} cos(kθ), Z(ϑ) ∝ Σ_n ĝ(n + ϑ/2π)^V, and χ_Q = −Z″(0)/(V Z(0)):

        χ_Q = (1/4π²) Σ_n [−ĝ″_n ĝ_n^{V−1} − (V−1) ĝ′_n² ĝ_n^{V−2}] / Σ_n ĝ_n^V,

    ĝ_n = 2π I_n(β), ĝ′_n = −∫ θ sin(nθ) e^{β cos θ}, ĝ″_n = −∫ θ² cos(nθ) e^{β cos θ} (Gauss–
    Legendre). The n = 0 term alone is ⟨θ²⟩/4π² (:func:`u1_chi_q_infinite`). Independent of
    :func:`u1_charge_distribution`, which it is tested against."""
    V = _u1_check(L, beta)
    n = _u1_orders(beta, V - 2)
    a = _u1_ratios(beta, n)
    theta, w = _gauss_legendre_half(max(256, 4 * int(n[-1]) + 64))
    weight = w * np.exp(beta * (np.cos(theta) - 1))  # e^{β(cos θ − 1)}: ∫_0^π of it is π ive(0, β)
    norm = weight.sum()  # ĝ_0 / (2 e^β)
    b = -(weight * theta * np.sin(np.outer(n, theta))).sum(1) / norm  # ĝ′_n / ĝ_0
    c = -(weight * theta**2 * np.cos(np.outer(n, theta))).sum(1) / norm  # ĝ″_n / ĝ_0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = -c * a ** (V - 1) - (V - 1) * b**2 * a ** (V - 2)
    terms = np.where(a > 0, terms, np.where(n == 0, -c, 0.0))
    return _symmetric_sum(terms) / _symmetric_sum(a**V) / (4 * math.pi**2)


def u1_charge_weights(L: int, beta: float, q_max: int | None = None, tol: float = 1e-13) -> tuple:
    """(Q = 0..q_max, w(Q)) with w(Q) = ∫_{−∞}^{∞} dk cos(2πkQ) r(k)^V, r(k) = ĝ(k)/ĝ(0),
    ĝ(k) = ∫_{−π}^{π} dθ e^{β cos θ} cos(kθ): P(Q) ∝ w(Q). Derivation: on the torus the V plaquette
    angles θ_P ∈ (−π, π] are independent with weight e^{β cos θ_P} up to the one constraint
    Σ_P θ_P ∈ 2πℤ (gauge fixing on a maximal tree; two holonomies drop out), so
    P(Q) ∝ ∫ Π dθ_P e^{β Σ cos θ_P} δ(Σ_P θ_P − 2πQ) = ∫ dk e^{−2πikQ} ĝ(k)^V (Bonati & Rossi 2019,
    whose Z(ϑ) is its Poisson dual). Poisson summation gives Σ_{Q∈ℤ} w(Q) = Σ_n r(n)^V
    = Σ_n (I_n/I_0)^V, the check of this quadrature.

    ĝ(k) is real and even; |r(k)| ~ e^{−2β}/(πk·a) decays only as 1/k (the weight is cut off at
    ±π), so r^V decays as k^{−V}: the k-integral (trapezoid rule on [0, K], even integrand) runs
    until |r|^V < ``tol`` over a unit interval, at most K = 1024. r(k) by Gauss–Legendre in θ."""
    V = _u1_check(L, beta)
    m2 = u1_theta2(beta)
    sigma_q = math.sqrt(V * m2) / (2 * math.pi)
    if q_max is None:
        q_max = min(V // 2, math.ceil(12 * sigma_q) + 3)
    width = 1.0 / math.sqrt(V * m2)  # of r(k)^V ≈ e^{−V m2 k²/2} near k = 0
    h = min(width / 40, 1.0 / (40 * max(q_max, 1)), 0.02)
    q = np.arange(q_max + 1)
    total = np.zeros(q_max + 1)
    chunk, start, k_max = 2048, 0, 1024.0
    while True:
        k = (start + np.arange(chunk)) * h
        theta, w = _gauss_legendre_half(max(256, int(2 * k[-1]) + 128))
        weight = w * np.exp(beta * (np.cos(theta) - 1))
        r = (weight * np.cos(np.outer(k, theta))).sum(1) / weight.sum()
        f = r**V
        f[k == 0] *= 0.5  # the trapezoid rule's end point at k = 0 (the integrand is even)
        total += 2 * h * (np.cos(2 * np.pi * np.outer(q, k)) * f).sum(1)
        last = np.abs(f[k > k[-1] - 1.0]).max()
        start += chunk
        if (k[-1] > 10 * width and last < tol) or k[-1] >= k_max:
            break
    return q, total


def u1_charge_distribution(L: int, beta: float, q_max: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Q = −q_max..q_max, P(Q)) of the geometric charge on the L×L torus (:func:`u1_charge_weights`),
    normalised by Σ_Q w(Q) over the range (q_max by default where P is below 1e-30 beyond, at most
    V/2: |θ_P| ≤ π bounds |Q| ≤ V/2)."""
    q, w = u1_charge_weights(L, beta, q_max)
    full_q = np.concatenate([-q[:0:-1], q])
    full_w = np.concatenate([w[:0:-1], w])
    return full_q, full_w / full_w.sum()

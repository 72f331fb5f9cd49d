"""The time-slice correlator and effective mass against the free field, whose answer is exact."""

import math

import numpy as np

from conftest import k_sigma
from physdiff.lattice.correlator import default_subtraction, slice_products, timeslice_correlator


def free_field(L: int, m0: float, n: int, seed: int = 0) -> np.ndarray:
    """n exact draws (n, L, L) of S = ½ Σ φ(−Δ + m₀²)φ on the L×L torus: white noise filtered by
    K(p)^{-1/2}, K(p) = Σ_μ 4 sin²(p_μ/2) + m₀²."""
    p = 2 * np.pi * np.arange(L) / L
    k = (4 * np.sin(p / 2) ** 2)[:, None] + (4 * np.sin(p / 2) ** 2)[None, :] + m0**2
    eta = np.random.default_rng(seed).normal(size=(n, L, L))
    return np.fft.ifft2(np.fft.fft2(eta) / np.sqrt(k)).real


def test_free_field_timeslice_correlator_and_effective_mass():
    L, m0 = 8, 0.5
    x = free_field(L, m0, 6000)
    E = math.acosh(1 + m0**2 / 2)
    t = np.arange(L // 2 + 1)
    exact = np.cosh(E * (t - L / 2)) / (2 * L * math.sinh(E) * math.sinh(E * L / 2))
    out = timeslice_correlator(x, subtract="m")
    c = np.array([e.value for e in out["C"]])
    dc = np.array([e.error for e in out["C"]])
    assert np.all(dc > 0) and k_sigma(c, exact, dc)
    meff = np.array([e.value for e in out["m_eff"]])
    dm = np.array([e.error for e in out["m_eff"]])
    assert len(meff) == L // 2 and np.all(np.isfinite(meff)) and np.all(dm > 0)
    assert k_sigma(meff, E, dm)
    assert np.all(dm < 0.2 * E)  # the test has power: a wrong mass by 20% would fail
    # a wrong form (exponential instead of cosh) would read log(C(t)/C(t+1)), not E, near L/2
    naive = np.log(exact[2] / exact[3])
    assert abs(naive - E) > 4 * dm[2]


def test_slice_products_sum_rule_and_subtraction():
    """Σ_t over the whole period of (1/L)Σ_{t₀} φ̄(t₀)φ̄(t₀+t) is L·M² per configuration; ⟨|M|⟩²
    is subtracted on the ordered side of the Binder cumulant, ⟨M⟩² otherwise."""
    x = free_field(6, 0.7, 50, seed=1)
    L = 6
    prod = slice_products(x)
    full = prod[:, 0] + 2 * prod[:, 1:L // 2].sum(1) + prod[:, L // 2]  # t and L − t counted once each
    np.testing.assert_allclose(full, L * x.reshape(len(x), -1).mean(1) ** 2, rtol=1e-10)
    assert default_subtraction(2 / 3) == "abs_m" and default_subtraction(0.1) == "m"
    a, b = timeslice_correlator(x, subtract="abs_m")["C"], timeslice_correlator(x, subtract="m")["C"]
    m = x.reshape(len(x), -1).mean(1)
    np.testing.assert_allclose([u.value - v.value for u, v in zip(a, b, strict=True)],
                               m.mean() ** 2 - np.abs(m).mean() ** 2, rtol=1e-9)

"""The Γ-method against the exact autocorrelation of an AR(1) process."""

import numpy as np
import pytest

from physdiff.stats import derived, gamma_method, kish_ess


def ar1(rho, n, chains, seed):
    rng = np.random.default_rng(seed)
    x = np.empty((chains, n))
    x[:, 0] = rng.normal(size=chains)
    eta = rng.normal(size=(chains, n)) * np.sqrt(1 - rho**2)
    for i in range(1, n):
        x[:, i] = rho * x[:, i - 1] + eta[:, i]
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_tau_int_and_error_of_ar1(rho):
    """AR(1), unit variance: τ_int = (1 + ρ)/(2(1 − ρ)) exactly, so the error of the mean of N
    values is √(2τ_int/N). Both estimated within their own errors (k = 4)."""
    x = ar1(rho, 20_000, 4, seed=1)
    est = gamma_method(x)
    tau = (1 + rho) / (2 * (1 - rho))
    assert abs(est.tau_int - tau) < 4 * est.tau_int_error + 0.02, (est, tau)
    assert est.error == pytest.approx(np.sqrt(2 * tau / x.size), rel=0.15)
    assert abs(est.value) < 5 * est.error


def test_error_is_the_spread_over_repetitions():
    """The quoted error matches the actual scatter of the mean over independent repetitions;
    ignoring autocorrelation (τ = ½) would underestimate it by √19 ≈ 4.4 at ρ = 0.9."""
    means, errors = [], []
    for seed in range(40):
        est = gamma_method(ar1(0.9, 2000, 1, seed)[0])
        means.append(est.value)
        errors.append(est.error)
    assert np.std(means) == pytest.approx(np.mean(errors), rel=0.3)


def test_derived_quantity_error():
    """f = ⟨a⟩² for iid data with mean μ: δf = 2μ σ/√N (linear error propagation)."""
    rng = np.random.default_rng(0)
    a = rng.normal(3.0, 2.0, size=40_000)
    est = derived(lambda m: m[0] ** 2, [a])
    assert est.value == pytest.approx(a.mean() ** 2)
    assert est.error == pytest.approx(2 * 3.0 * 2.0 / np.sqrt(len(a)), rel=0.05)


def test_kish_ess():
    assert kish_ess(np.zeros(1000))[0] == pytest.approx(1.0)
    lw = np.log(np.r_[np.ones(10), np.zeros(990) + 1e-300])
    assert kish_ess(lw)[0] == pytest.approx(0.01, rel=1e-6)  # 10 of 1000 carry all the weight

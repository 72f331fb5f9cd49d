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


# ---------------------------------------------------------------- the floor τ_int ≥ ½ (issue 20)


def test_error_never_below_independent_data():
    """Short independent series: the summed autocorrelation is often ≤ 0 by noise (15% at N = 8),
    which gave an error of exactly 0; the error is now at least the naive √(Γ(0)/N)."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        x = rng.normal(size=8)
        est = gamma_method(x)
        assert est.error >= np.sqrt(x.var() / x.size) > 0 and est.tau_int >= 0.5


def test_anticorrelated_series_gets_the_naive_error():
    """AR(1) at ρ = −0.6: the exact error of the mean is √((1+ρ)/(1−ρ)/N) = half the naive one;
    the Γ-method quotes the naive error (conservative), never 0."""
    x = ar1(-0.6, 2000, 1, seed=4)[0]
    est = gamma_method(x)
    exact = np.sqrt((1 - 0.6) / (1 + 0.6) / x.size)
    assert est.tau_int == pytest.approx(0.5 * (1 + 3 / x.size), rel=1e-12) and est.window == 1  # the floor
    assert est.error == pytest.approx(np.sqrt(x.var() / x.size * (1 + 3 / x.size)), rel=1e-12)
    assert est.error > exact


def test_compare_with_zero_error_is_not_comparable():
    """All +1 against all −1: equal and zero errors. z is None (JSON null), never 0 ("agree")."""
    import json

    from physdiff.lattice.action import Ising
    from physdiff.lattice.observables import SCALARS, as_table, compare, format_z, measure

    up, down = np.ones((64, 4, 4)), -np.ones((64, 4, 4))
    with np.errstate(divide="ignore", invalid="ignore"):  # ξ₂ of a constant field divides by F = 0
        a, b = as_table(measure(up, Ising(0.44))), as_table(measure(down, Ising(0.44)))
    z = compare(a, b)
    assert a["m"]["error"] == b["m"]["error"] == 0 and z["m"] is None and z["abs_m"] is None
    assert "NaN" not in json.dumps(z, allow_nan=False) and json.loads(json.dumps(z))["m"] is None
    assert format_z(None, ">+7.2f") == "    n/a" and format_z(1.5, ">+7.2f") == "  +1.50"
    assert set(z) == set(SCALARS)


def test_observables_compare_prints_not_comparable(tmp_path, capsys):
    import json

    from physdiff.cli import main
    from physdiff.lattice.ensemble import save_ensemble

    info = {"params": {"model": "ising", "beta": 0.44}, "chains": 1}
    save_ensemble(tmp_path / "up.npy", np.ones((64, 4, 4)), info)
    save_ensemble(tmp_path / "down.npy", -np.ones((64, 4, 4)), info)
    argv = ["observables", str(tmp_path / "up.npy"), "--compare", str(tmp_path / "down.npy")]
    with np.errstate(divide="ignore", invalid="ignore"):
        assert main(argv) == 0
        table = capsys.readouterr().out
        assert main([*argv, "--json"]) == 0
        out = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("m "))
    assert row.rstrip().endswith("n/a") and "not comparable" in table
    assert "NaN" not in out and json.loads(out)["compare"]["z"]["m"] is None


# ---------------------------------------------------------------- against pyerrors


@pytest.fixture(scope="module")
def pe():
    import warnings

    with warnings.catch_warnings():  # pyerrors imports scipy.odr, deprecated in SciPy 1.17
        warnings.simplefilter("ignore", DeprecationWarning)
        import pyerrors

    return pyerrors


@pytest.mark.parametrize("S", [1.5, 2.0])  # physdiff's default S, pyerrors' default S
@pytest.mark.parametrize("rho", [0.5, -0.5, 0.9, -0.9])
def test_gamma_method_equals_pyerrors_on_ar1(pe, rho, S):
    """One chain, the same S: the same window, the same error (to rounding), the same τ_int with
    Wolff's eq. 49 bias factor (pyerrors' e_tauint carries an extra 1/(1 + 1/N)). ρ < 0: both at
    the floor τ_int = ½ (times the bias factor)."""
    x = ar1(rho, 5000, 1, seed=3)[0]
    est = gamma_method(x, S=S)
    obs = pe.Obs([x], ["ens"])
    obs.gamma_method(S=S)
    assert est.value == pytest.approx(obs.value, rel=1e-14, abs=1e-14)
    assert est.error == pytest.approx(obs.dvalue, rel=1e-10)
    assert est.window == obs.e_windowsize["ens"]
    n, w = x.size, est.window
    assert est.tau_int / (1 + 1 / n) == pytest.approx(obs.e_tauint["ens"], rel=1e-6)
    if rho < 0:
        assert est.tau_int == pytest.approx(0.5 * (1 + 3 / n), rel=1e-12) and w == 1


def test_replicas_against_pyerrors(pe):
    """Replicas: physdiff takes fluctuations about the overall mean, pyerrors about each replica's
    own mean. With the replicas shifted to one mean the two agree to rounding; with their own
    means physdiff's error also contains the spread of the replica means (never smaller here)."""
    x = ar1(0.7, 3000, 4, seed=8) + np.array([[0.0], [0.05], [-0.05], [0.1]])
    obs = pe.Obs(list(x), [f"ens|r{i}" for i in range(4)])
    obs.gamma_method(S=1.5)
    centred = x - x.mean(1, keepdims=True) + x.mean()
    assert gamma_method(centred).error == pytest.approx(obs.dvalue, rel=1e-10)
    assert gamma_method(x).error >= obs.dvalue


def test_derived_ratio_against_pyerrors(pe):
    """⟨a⟩/⟨b⟩ of two correlated AR(1) series: pyerrors' gradient is exact (autograd), physdiff's
    a central difference of step σ/√N, so the errors agree to O((σ/(√N ⟨b⟩))²) ≈ 1e-5: rel 1e-4."""
    a = ar1(0.7, 5000, 1, seed=5)[0] + 3
    b = 0.5 * ar1(0.7, 5000, 1, seed=6)[0] + 0.3 * a
    est = derived(lambda m: m[0] / m[1], [a, b])
    ratio = pe.Obs([a], ["ens"]) / pe.Obs([b], ["ens"])
    ratio.gamma_method(S=1.5)
    assert est.value == pytest.approx(ratio.value, rel=1e-12)
    assert est.error == pytest.approx(ratio.dvalue, rel=1e-4)
    assert est.window == ratio.e_windowsize["ens"]

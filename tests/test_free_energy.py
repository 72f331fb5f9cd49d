"""Free energies by Monte Carlo's own estimators (lattice/free_energy.py): the solvable anchors
to 1e-12 against closed forms, the exact draws there, and thermodynamic integration, MBAR and
Jarzynski against exact log Z (the free field; Ising by Kaufman's formula, checked against
enumeration at L = 4) within their errors; a protocol or grid that is too coarse reports a larger
error (or a warning), never a wrong value with a small error."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import kve

from physdiff.errors import PhysdiffError
from physdiff.lattice import Ising, Phi4
from physdiff.lattice.exact import free_field_log_z, ising_enumerate, ising_log_z
from physdiff.lattice.free_energy import free_energy, thermodynamic_integration

K = 4.0  # agreement within K errors


def quartic_integral(a: float, b: float) -> float:
    """∫ dφ e^{−aφ² − bφ⁴} = ½ √(a/b) e^{z} K_{1/4}(z), z = a²/8b (a, b > 0; Gradshteyn & Ryzhik 3.323.3)."""
    z = a * a / (8 * b)
    return 0.5 * math.sqrt(a / b) * kve(0.25, z)


@pytest.mark.parametrize("lam", [0.0, 0.022, 0.3])
def test_phi4_anchor_is_the_one_site_integral(lam):
    L = 4
    got = Phi4(kappa=0.0, lam=lam).log_z_solvable(L)
    want = L * L * (0.5 * math.log(math.pi) if lam == 0 else math.log(quartic_integral(1 - 2 * lam, lam)))
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_ising_anchor_and_kaufman_against_enumeration():
    assert Ising(beta=0.0).log_z_solvable(4) == pytest.approx(16 * math.log(2), rel=1e-15)
    assert ising_log_z(4, 0.44) == pytest.approx(ising_enumerate(4, 0.44)["log_z"], rel=1e-12)
    with pytest.raises(PhysdiffError, match="beta = 0"):
        Ising(beta=0.3).log_z_solvable(4)


def test_exact_draws_at_kappa_zero():
    """⟨φ²⟩ and ⟨φ⁴⟩ of the rejection sampler against the one-site law, d/da of the integral."""
    lam = 0.3
    x = Phi4(kappa=0.0, lam=lam).sample_solvable(8, 3000, np.random.default_rng(1)).ravel()
    a, h = 1 - 2 * lam, 1e-5
    z = quartic_integral(a, lam)
    m2 = -(quartic_integral(a + h, lam) - quartic_integral(a - h, lam)) / (2 * h) / z
    assert abs(np.mean(x**2) - m2) < K * np.std(x**2) / math.sqrt(len(x))
    assert abs(np.mean(x)) < K * np.std(x) / math.sqrt(len(x))


CASES = {"free field": ("phi4", {"kappa": 0.2, "lam": 0.0}, free_field_log_z(4, 0.2)),
         "Ising": ("ising", {"beta": 0.44}, ising_log_z(4, 0.44))}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", ["ti", "mbar", "jarzynski"])
def test_every_estimator_finds_the_exact_log_z(case, method):
    model, values, exact = CASES[case]
    n = 128 if method == "jarzynski" else 800
    r = free_energy(model, 4, values, method, n=n, steps=100, seed=3)
    lz = r["log_z"]
    assert 0 < lz["error"] < 0.2 and abs(lz["value"] - exact) < K * lz["error"], (lz, exact)
    assert r["free_energy_density"]["value"] == pytest.approx(-lz["value"] / 16)
    if method == "ti":
        assert lz["error"] == pytest.approx(math.hypot(lz["statistical_error"], lz["quadrature_error"]))


def test_a_coarse_grid_reports_its_quadrature_error():
    """Across the free field's steep rise to κ = 0.24 (its integrand grows like 1/(1 − 4κ)) five
    points report a quadrature error several times that of thirteen, and each total error covers
    its deviation from the exact log Z."""
    exact = free_field_log_z(4, 0.24)
    coarse, fine = (thermodynamic_integration(Phi4(kappa=0.24, lam=0.0), 4, points=p, n=800, seed=1)["log_z"]
                    for p in (5, 13))
    assert coarse["quadrature_error"] > 2 * fine["quadrature_error"]
    for r in (coarse, fine):
        assert abs(r["value"] - exact) < K * r["error"], (r, exact)


def test_a_fast_protocol_gives_a_large_error_or_a_warning():
    """Jarzynski in 2 steps from β = 0 to 0.44: the work's spread is large; the estimate is
    either within its (larger) error or flagged by its Kish ESS."""
    exact = ising_log_z(4, 0.44)
    slow = free_energy("ising", 4, {"beta": 0.44}, "jarzynski", n=128, steps=100, seed=5)["log_z"]
    fast = free_energy("ising", 4, {"beta": 0.44}, "jarzynski", n=128, steps=2, seed=5)["log_z"]
    assert fast["error"] > slow["error"]
    assert abs(fast["value"] - exact) < K * fast["error"] or "warning" in fast


def test_refusals_are_one_line():
    with pytest.raises(PhysdiffError, match="1 mod 4"):
        free_energy("ising", 4, {"beta": 0.44}, "ti", points=7)
    with pytest.raises(PhysdiffError, match="1 mod 4 points, 5 to 1001"):  # before any memory is taken
        free_energy("ising", 4, {"beta": 0.44}, "mbar", points=10**9 + 1)
    with pytest.raises(PhysdiffError, match="1 to 1000000 steps"):
        free_energy("ising", 4, {"beta": 0.44}, "jarzynski", steps=10**11)
    with pytest.raises(PhysdiffError, match="solvable along beta, not along 'kappa'"):
        free_energy("ising", 4, {"beta": 0.44}, "ti", parameter="kappa")
    with pytest.raises(PhysdiffError, match="needs a trained run"):
        free_energy("phi4", 4, {}, "diffusion")
    with pytest.raises(PhysdiffError, match="unknown free-energy method"):
        free_energy("phi4", 4, {}, "bar")


def test_a_theory_without_a_solvable_point_is_refused():
    from dataclasses import dataclass
    from typing import ClassVar

    from physdiff.lattice.theory import THEORIES, Theory, param

    @dataclass(frozen=True)
    class Quartic(Theory):
        name: ClassVar[str] = "quartic_no_anchor"
        g: float = param(1.0)

        def action(self, phi):
            return (phi**4).sum((-2, -1)) * self.g

    THEORIES["quartic_no_anchor"] = Quartic
    try:
        with pytest.raises(PhysdiffError, match="declares no solvable point"):
            free_energy("quartic_no_anchor", 4, {}, "jarzynski")
    finally:
        del THEORIES["quartic_no_anchor"]


def test_the_command_line(capsys):
    from physdiff.cli import main

    assert main(["free-energy", "ising", "--L", "4", "--beta", "0.44", "--method", "jarzynski", "--n", "64",
                 "--steps", "50", "--json", "-q"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "jarzynski" and math.isfinite(report["log_z"]["value"])
    assert main(["free-energy", "ising", "--L", "4", "--method", "ti", "--points", "6"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("physdiff: error: ") and "1 mod 4" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------- grown to an error, within a budget


def test_ti_grown_to_an_error_refines_where_the_integrand_bends():
    """The free field to κ = 0.24 from a 5-point pilot: asked for σ ≤ 0.1, ti splits the panel
    where 1/(1 − 4κ) bends (more nodes above κ = 0.12 than below) and puts the configurations
    where the integrand's weight and variance are (the top node holds more than the bottom one);
    the result reaches the target and covers the exact log Z."""
    exact = free_field_log_z(4, 0.24)
    r = free_energy("phi4", 4, {"kappa": 0.24, "lam": 0.0}, "ti", n=64, points=5, seed=0, error=0.1)
    lz, d = r["log_z"], r["diagnostics"]
    assert d["growth"]["reached"] and lz["error"] <= 0.1 and "warning" not in lz
    assert abs(lz["value"] - exact) < K * lz["error"], (lz, exact)
    assert sum(v > 0.12 for v in d["grid"]) > sum(v < 0.12 for v in d["grid"]) + 2, d["grid"]
    assert d["n_per_point"][-1] > d["n_per_point"][0]
    assert len(d["panels"]) == (d["points"] - 1) // 4


@pytest.mark.parametrize("method", ["mbar", "jarzynski"])
def test_mbar_and_jarzynski_grown_to_an_error_reach_it(method):
    exact = ising_log_z(4, 0.44)
    pilot = free_energy("ising", 4, {"beta": 0.44}, method, n=64, points=5, steps=50, seed=2)
    r = free_energy("ising", 4, {"beta": 0.44}, method, n=64, points=5, steps=50, seed=2, error=0.05)
    assert pilot["log_z"]["error"] > 0.05 and r["log_z"]["error"] <= 0.05 and r["diagnostics"]["growth"]["reached"]
    assert abs(r["log_z"]["value"] - exact) < K * r["log_z"]["error"]
    size = "configurations" if method == "mbar" else "trajectories"
    assert r["diagnostics"][size] > pilot["diagnostics"][size]


def test_a_budget_ends_the_growth_and_says_so():
    """A target out of reach in a second: the estimate stops near the budget, says the budget
    ended it, and warns that the target was not reached (never claims it)."""
    r = free_energy("ising", 4, {"beta": 0.44}, "jarzynski", n=64, steps=50, seed=1, error=1e-4, budget=1.0)
    g, lz = r["diagnostics"]["growth"], r["log_z"]
    assert not g["reached"] and g["ended"] == "the budget is spent" and "above the target" in lz["warning"]
    assert r["seconds"] < 3.0 and lz["error"] > 1e-4
    alone = free_energy("ising", 4, {"beta": 0.44}, "mbar", n=64, points=5, seed=1, budget=1.0)
    assert alone["diagnostics"]["growth"]["rounds"] >= 1 and "warning" not in alone["log_z"]


@pytest.mark.parametrize("bad", [{"error": 0.0}, {"error": float("nan")}, {"error": -1.0}, {"budget": 0},
                                 {"budget": float("inf")}, {"error": True}])
def test_a_bad_target_or_budget_is_one_line(bad):
    with pytest.raises(PhysdiffError, match="must be a finite number"):
        free_energy("ising", 4, {"beta": 0.44}, "ti", **bad)


@settings(max_examples=12, deadline=None)
@given(method=st.sampled_from(["ti", "mbar", "jarzynski"]), L=st.sampled_from([2, 4]),
       point=st.one_of(st.tuples(st.just("ising"), st.fixed_dictionaries({"beta": st.floats(0.0, 2.0)})),
                       st.tuples(st.just("phi4"), st.fixed_dictionaries({"kappa": st.floats(-0.5, 0.5),
                                                                         "lam": st.floats(0.0, 5.0)}))),
       n=st.integers(16, 64), steps=st.integers(1, 20), seed=st.integers(0, 2**63 - 1))
def test_every_number_of_free_energy_is_finite_or_refused(method, L, point, n, steps, seed):
    """Any theory point, size and budget: a report of finite numbers, or one PhysdiffError."""
    model, values = point
    try:
        r = free_energy(model, L, values, method, n=n, points=5, steps=steps, seed=seed)
    except PhysdiffError as exc:
        assert "\n" not in str(exc)
        return
    assert all(math.isfinite(v) for v in (r["log_z"]["value"], r["log_z"]["error"], r["seconds"],
                                          r["free_energy_density"]["value"]))

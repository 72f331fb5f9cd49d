"""2D U(1) lattice gauge theory (issue 39, phase A): the theory "u1" (``lattice/u1.py``), its exact
finite-volume results (``lattice/exact.py``, ``u1_*``), the reference Monte Carlo and the
free-energy estimators on it, and the command line's ``mcmc u1``."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.special import ive

from physdiff.errors import PhysdiffError
from physdiff.lattice import U1, Phi4, Theory, get_theory, run_mcmc
from physdiff.lattice import exact as ex
from physdiff.lattice.theory import check_theory
from physdiff.lattice.u1 import (
    gauge_transform,
    plaquette_angles,
    reflect,
    topological_charge,
    transpose,
    u1_measure,
    wilson_loops,
    wrap,
)

torch.set_num_threads(1)


def links(B: int, L: int, seed: int = 0) -> torch.Tensor:
    return (torch.rand((B, 2, L, L), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 0.5) \
        * 2 * math.pi


# ---------------------------------------------------------------------------------------------- the theory


def test_registered_with_its_contract():
    assert get_theory("u1") is U1
    theory = U1(beta=2.0)
    assert theory.field_shape(4) == (2, 4, 4) and U1.compact and not Theory.compact and not Phi4.compact
    assert not theory.has_cluster_update and theory.discrete is None and theory.symbol("beta") == "β"
    assert U1.parameters()["beta"].default == 4.0
    check_theory(U1)  # action (B,) and force of the field's shape, finite
    with pytest.raises(PhysdiffError, match="out of range"):
        U1.from_values({"beta": -1.0})


def test_plaquette_angle_and_wrap():
    x = torch.zeros((1, 2, 3, 3), dtype=torch.float64)
    x[0, 0, 1, 1] = 0.3  # θ₀(1, 1) enters θ_P(1, 1) with + and θ_P(1, 0) with −
    x[0, 1, 2, 2] = 0.5  # θ₁(2, 2) enters θ_P(1, 2) with + and θ_P(2, 2) with −
    p = plaquette_angles(x)[0]
    want = torch.zeros(3, 3, dtype=torch.float64)
    want[1, 1], want[1, 0], want[1, 2], want[2, 2] = 0.3, -0.3, 0.5, -0.5
    assert torch.allclose(p, want)
    a = np.array([math.pi, -math.pi, 0.0, 3 * math.pi, -2.5 * math.pi, 7.0, -1e-300])
    w = wrap(a)
    assert np.all(w > -math.pi) and np.all(w <= math.pi) and np.allclose(np.cos(w), np.cos(a))
    assert w[0] == math.pi and w[1] == math.pi and w[2] == 0.0
    assert torch.equal(wrap(torch.from_numpy(a)), torch.from_numpy(w))


def test_force_is_minus_the_gradient():
    theory = U1(beta=1.7)
    x = links(3, 5) * 2.0  # unwrapped angles too: HMC's
    assert torch.allclose(theory.force(x), Theory.force(theory, x), atol=1e-12, rtol=0)
    assert torch.allclose(theory.action_derivative(x, "beta"), Theory.action_derivative(theory, x, "beta"),
                          atol=1e-9, rtol=0)


def test_symmetries_leave_the_action_and_the_charge():
    theory = U1(beta=1.3)
    x = links(64, 4, seed=1)
    s, q = theory.action(x), topological_charge(x)
    assert (q != 0).any()
    alpha = links(64, 4, seed=2)[:, 0]
    g = gauge_transform(x, alpha)
    assert torch.allclose(theory.action(g), s, atol=1e-10) and np.array_equal(topological_charge(g), q)
    assert np.allclose(wilson_loops(g, 1, 2), wilson_loops(x, 1, 2), atol=1e-12)
    constant = x + torch.tensor([0.4, -1.9], dtype=torch.float64)[:, None, None]  # each direction's links shifted
    assert torch.allclose(theory.action(constant), s, atol=1e-10) and np.array_equal(topological_charge(constant), q)
    shifted = torch.roll(x, (1, 3), dims=(-2, -1))
    assert torch.allclose(theory.action(shifted), s, atol=1e-10) and np.array_equal(topological_charge(shifted), q)
    for fn in (transpose, lambda y: reflect(y, -2), lambda y: reflect(y, -1), lambda y: -y):
        y = fn(x)
        assert torch.allclose(theory.action(y), s, atol=1e-10)
        assert np.array_equal(topological_charge(y), -q)  # every one reverses the orientation
    # the reflections act on the plaquettes as they should: θ′_P = −θ_P at the mirror image
    p, L = plaquette_angles(x), 4
    mirror = [(L - 1 - i) % L for i in range(L)]
    assert torch.allclose(plaquette_angles(reflect(x, -2)), -p[:, mirror, :], atol=1e-12)
    assert torch.allclose(plaquette_angles(transpose(x)), -p.transpose(-2, -1), atol=1e-12)
    aug = theory.augment(x, torch.Generator().manual_seed(3))
    assert aug.shape == x.shape and (aug > -math.pi).all() and (aug <= math.pi).all()
    assert torch.allclose(theory.action(aug), s, atol=1e-10)
    assert np.array_equal(np.abs(topological_charge(aug)), np.abs(q)) and not torch.allclose(aug, x)
    assert (topological_charge(aug) == -q)[q != 0].any()  # charge conjugation happens
    assert np.allclose(wilson_loops(aug, 2, 2).mean(), wilson_loops(x, 2, 2).mean(), atol=1e-12)


def test_charge_is_an_integer_and_odd():
    x = links(500, 5, seed=4)
    raw = topological_charge(x, rounded=False)
    assert np.abs(raw - np.rint(raw)).max() < 1e-9
    q = topological_charge(x)
    assert set(np.unique(q)) > {-1.0, 0.0, 1.0}
    assert np.array_equal(topological_charge(-x), -q)
    assert np.array_equal(topological_charge(x + 2 * math.pi), q)  # a function of the wrapped links


def test_solvable_point_and_samples():
    theory = U1(beta=0.0)
    assert theory.log_z_solvable(4) == pytest.approx(2 * 16 * math.log(2 * math.pi))
    assert theory.log_z_solvable(4) == pytest.approx(ex.u1_log_z(4, 0.0)) and ex.u1_log_z(4, 0.0, "haar") == 0.0
    x = theory.sample_solvable(3, 2000, np.random.default_rng(0))
    assert x.shape == (2000, 2, 3, 3) and x.min() > -math.pi and x.max() <= math.pi
    assert abs(np.cos(x).mean()) < 0.02 and abs(x.var() - math.pi**2 / 3) < 0.05
    with pytest.raises(PhysdiffError):
        U1(beta=1.0).log_z_solvable(4)
    start = U1(beta=1.0).start(4, 6, np.random.default_rng(0))
    assert start.shape == (6, 2, 4, 4) and (start[3:] == 0).all() and (np.abs(start[:3]) > 0).all()
    assert np.array_equal(theory.postprocess(np.array([4.0])), np.array([4.0 - 2 * math.pi]))
    with pytest.raises(PhysdiffError, match="outside"):
        theory.check_samples(np.full((2, 2, 4, 4), 4.0), "'x.npy'")
    theory.check_samples(np.float32(x), "'x.npy'")


# ---------------------------------------------------------------------------------------------- exact results


def test_log_z_against_brute_force_on_2x2():
    """L = 2: 8 links; fixing the maximal tree θ₀(0,0) = θ₁(0,0) = θ₁(1,0) = 0 (exact for a
    gauge-invariant integrand under the Haar measure) leaves 5, integrated by the trapezoid rule
    (periodic and analytic: spectrally accurate) with the theory's own action."""
    m = 16
    grid = -math.pi + 2 * math.pi * np.arange(m) / m
    free = np.stack(np.meshgrid(*([grid] * 5), indexing="ij"), -1).reshape(-1, 5)
    x = np.zeros((len(free), 2, 2, 2))
    x[:, 0, 1, 0], x[:, 0, 0, 1], x[:, 0, 1, 1], x[:, 1, 0, 1], x[:, 1, 1, 1] = free.T
    x = torch.from_numpy(x)
    for beta in (0.7, 2.0):
        theory = U1(beta=beta)
        weights = torch.exp(-theory.action(x))
        assert math.log(weights.mean()) == pytest.approx(ex.u1_log_z(2, beta, "haar"), abs=1e-10)
        plaq = float((weights * torch.cos(plaquette_angles(x)).mean((-2, -1))).sum() / weights.sum())
        assert plaq == pytest.approx(ex.u1_plaquette(2, beta), abs=1e-10)
    # and ⟨cos θ_P⟩ = (1/V) ∂ log Z/∂β
    h = 1e-5
    assert ex.u1_plaquette(5, 1.2) == pytest.approx((ex.u1_log_z(5, 1.2 + h) - ex.u1_log_z(5, 1.2 - h)) / (2 * h)
                                                    / 25, abs=1e-7)


def test_plaquette_limits():
    i1_i0 = float(ive(1, 1.0) / ive(0, 1.0))
    assert ex.u1_plaquette(32, 1.0) == pytest.approx(i1_i0, abs=1e-14)  # large V: I₁/I₀
    assert ex.u1_plaquette(16, 0.01) == pytest.approx(0.005, rel=1e-4)  # small β: β/2
    assert ex.u1_plaquette(4, 0.0) == 0.0
    beta = 50.0  # large β: 1 − 1/(2β) − 1/(8β²) + ..., and the constraint's 1/(2βV)
    assert ex.u1_plaquette(16, beta) == pytest.approx(1 - 1 / (2 * beta) - 1 / (8 * beta**2), abs=1e-4)
    assert ex.u1_plaquette(4, 1.0) == pytest.approx(0.44639391202998870, abs=1e-14)
    assert ex.u1_plaquette(4, 3.0) == pytest.approx(0.81585097275030780, abs=1e-14)


def test_wilson_loops_exact():
    assert ex.u1_wilson_loop(4, 1.3, 1) == pytest.approx(ex.u1_plaquette(4, 1.3), abs=1e-15)
    assert ex.u1_wilson_loop(4, 1.3, 5) == pytest.approx(ex.u1_wilson_loop(4, 1.3, 11), abs=1e-15)  # A ↔ V − A
    assert ex.u1_wilson_loop(4, 1.3, 16) == pytest.approx(1.0) and ex.u1_wilson_loop(4, 1.3, 0) == pytest.approx(1.0)
    a = float(ive(1, 2.0) / ive(0, 2.0))
    assert ex.u1_wilson_loop(32, 2.0, 6) == pytest.approx(a**6, rel=1e-12)  # the area law at large V
    assert ex.u1_wilson_loop(4, 0.0, 3) == 0.0


def test_charge_distribution_and_susceptibility():
    for L, beta in ((2, 1.0), (3, 0.5), (4, 1.0), (4, 3.0), (8, 6.0)):
        V = L * L
        _, w = ex.u1_charge_weights(L, beta)
        n = np.arange(1, 200)
        poisson = 1 + 2 * ((ive(n, beta) / ive(0, beta)) ** V).sum()  # Σ_Q w(Q) = Σ_n (I_n/I_0)^V
        assert w[0] + 2 * w[1:].sum() == pytest.approx(poisson, rel=1e-9)
        qs, p = ex.u1_charge_distribution(L, beta)
        assert np.array_equal(qs, -qs[::-1]) and np.allclose(p, p[::-1], atol=0, rtol=0)
        assert p.sum() == pytest.approx(1.0, abs=1e-14) and p.min() > -1e-11 and abs(qs).max() <= V // 2
        chi = float((qs**2 * p).sum() / V)
        assert chi > 0 and chi == pytest.approx(ex.u1_topological_susceptibility(L, beta), rel=1e-9)
    assert ex.u1_topological_susceptibility(4, 0.0) == pytest.approx(1 / 12, rel=1e-12)  # uniform plaquettes


def test_infinite_volume_susceptibility():
    for beta in (0.0, 0.5, 2.0, 10.0):
        num, _ = quad(lambda t, b=beta: t * t * math.exp(b * (math.cos(t) - 1)), -math.pi, math.pi, epsabs=0,
                      epsrel=1e-13)
        den, _ = quad(lambda t, b=beta: math.exp(b * (math.cos(t) - 1)), -math.pi, math.pi, epsabs=0, epsrel=1e-13)
        assert ex.u1_chi_q_infinite(beta) == pytest.approx(num / den / (4 * math.pi**2), rel=1e-10)
    assert ex.u1_chi_q_infinite(100.0) == pytest.approx(1 / (4 * math.pi**2 * 100), rel=0.02)
    # finite V approaches it (exponentially in V/β): far at L = 4, β = 3; equal to 1e-9 at L = 16, β = 2
    assert ex.u1_topological_susceptibility(4, 3.0) < 0.7 * ex.u1_chi_q_infinite(3.0)
    gaps = [abs(ex.u1_topological_susceptibility(L, 3.0) / ex.u1_chi_q_infinite(3.0) - 1) for L in (4, 6, 8, 12)]
    assert all(b < a for a, b in itertools.pairwise(gaps)) and gaps[-1] < 1e-6
    q, p = ex.u1_charge_distribution(16, 2.0)
    assert float((q**2 * p).sum() / 256) == pytest.approx(ex.u1_chi_q_infinite(2.0), rel=1e-9)


# ---------------------------------------------------------------------------------------------- Monte Carlo


@pytest.mark.parametrize(("beta", "n"), [(1.0, 3200), (3.0, 16000)])
def test_hmc_against_exact(beta, n):
    theory = U1(beta=beta)
    x, report = run_mcmc(theory, 4, n, seed=0, chains=16)
    assert x.shape == (n, 2, 4, 4) and x.min() > -math.pi and x.max() <= math.pi
    assert report["thermalisation"]["agree"] and report["hmc_acceptance"] > 0.5
    table = u1_measure(x, theory, chains=16)
    assert not table["frozen"] and table["frozen_reason"] is None and min(table["Q_changes"]) >= 10
    exact = {"plaquette": ex.u1_plaquette(4, beta), "chi_Q": ex.u1_topological_susceptibility(4, beta),
             "Q": 0.0, "action_density": -beta * ex.u1_plaquette(4, beta)}
    for key, value in exact.items():
        est = table[key]
        assert abs(est["value"] - value) < 3 * est["error"], (key, est, value)
    for key, area in (("1x2", 2), ("2x2", 4)):
        est = table["W"][key]
        assert abs(est["value"] - ex.u1_wilson_loop(4, beta, area)) < 3 * est["error"], (key, est)
    assert table["W"]["1x1"] == table["plaquette"]


def test_frozen_charge_is_flagged():
    theory = U1(beta=2.0)
    cold = np.zeros((64, 2, 4, 4))
    table = u1_measure(cold, theory, chains=4)
    assert table["frozen"] and "never changes" in table["frozen_reason"] and table["chi_Q"]["frozen"]
    x = U1(beta=0.0).sample_solvable(4, 400, np.random.default_rng(1))  # independent: Q moves every time
    fine = u1_measure(x, theory, chains=4)
    assert not fine["frozen"] and "frozen" not in fine["chi_Q"] and fine["tau_int_Q"] < 1.5
    x[:100] = x[0]  # one chain stuck
    stuck = u1_measure(x, theory, chains=4)
    assert stuck["frozen"] and stuck["Q_changes"][0] == 0
    with pytest.raises(PhysdiffError, match="links"):
        u1_measure(np.zeros((4, 4, 4)), theory)


def test_free_energy_from_the_solvable_point():
    from physdiff.lattice.free_energy import free_energy

    exact = ex.u1_log_z(4, 1.0)  # Lebesgue: 2V log 2π + log Σ_n I_n^V
    for method, options in (("jarzynski", {"n": 256, "steps": 200}), ("ti", {"points": 5, "n": 960})):
        r = free_energy("u1", 4, {"beta": 1.0}, method, seed=0, **options)
        assert abs(r["log_z"]["value"] - exact) < 3 * r["log_z"]["error"], (method, r["log_z"], exact)


def test_cli_mcmc(tmp_path, capsys):
    from physdiff.cli import main
    from physdiff.lattice.ensemble import load_ensemble

    out = tmp_path / "u1.npy"
    main(["mcmc", "u1", "--L", "4", "--beta", "2", "--n", "320", "--out", str(out)])
    assert "wrote 320 configurations" in capsys.readouterr().out
    x, info = load_ensemble(out)
    assert x.shape == (320, 2, 4, 4) and info["params"] == {"model": "u1", "beta": 2.0}
    table = u1_measure(x, U1(beta=2.0), chains=info["chains"])
    assert abs(table["plaquette"]["value"] - ex.u1_plaquette(4, 2.0)) < 4 * table["plaquette"]["error"]


def test_the_monte_carlo_times_the_charge_and_observables_read_the_gauge_table(tmp_path, capsys):
    """The pilot times |Q| (gauge invariant), the hot/cold check compares it, `observables`
    prints U(1)'s own table with the frozen flag and compares two ensembles row by row, and the
    scalar-field figures and pyerrors export are refused in one line."""
    from physdiff.cli import main

    x, report = run_mcmc(U1(beta=2.0), 4, 320, seed=1)
    assert report["pilot_monitor"] == "abs_q" and "abs_q" in report["thermalisation"]
    assert np.allclose(U1(beta=2.0).monitor(x), np.abs(topological_charge(x)))
    out = tmp_path / "u.npy"
    assert main(["mcmc", "u1", "--L", "4", "--beta", "2", "--n", "320", "--out", str(out), "-q"]) == 0
    assert "for |Q|" in capsys.readouterr().out
    assert main(["observables", str(out), "--compare", str(out)]) == 0
    text = capsys.readouterr().out
    assert "plaquette" in text and "chi_Q" in text and "W(2x2)" in text and "+0.00" in text
    for extra in (["--plot", str(tmp_path)], ["--pyerrors", str(tmp_path / "p.json.gz")]):
        assert main(["observables", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "U(1)" in err
    assert not (tmp_path / "p.json.gz").exists()

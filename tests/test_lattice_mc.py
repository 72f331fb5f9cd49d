"""Reference Monte Carlo against exact results: free field, Ising (enumeration and the exact
finite-lattice partition function), HMC reversibility and area preservation."""

import numpy as np
import pytest
import torch

from physdiff.lattice.action import Ising, Phi4, free_field_propagator
from physdiff.lattice.exact import ising_energy_density, ising_enumerate, ising_log_z
from physdiff.lattice.mc import leapfrog, run_mcmc
from physdiff.lattice.observables import measure


def test_action_and_force():
    """S against a loop over sites; the force is −∂S/∂φ (autograd)."""
    theory = Phi4(0.27, 0.02)
    phi = torch.randn(3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = torch.zeros(3, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            f = phi[:, i, j]
            s += -2 * 0.27 * f * (phi[:, (i + 1) % 4, j] + phi[:, i, (j + 1) % 4])
            s += (1 - 2 * 0.02) * f**2 + 0.02 * f**4
    torch.testing.assert_close(theory.action(phi), s)
    p = phi.clone().requires_grad_(True)
    grad, = torch.autograd.grad(theory.action(p).sum(), p)
    torch.testing.assert_close(theory.force(phi), -grad)


def test_leapfrog_is_reversible_and_area_preserving():
    theory = Phi4(0.27, 0.022)
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(2, 4, 4, dtype=torch.float64, generator=g)
    mom = torch.randn(2, 4, 4, dtype=torch.float64, generator=g)
    new, mom_new = leapfrog(theory, phi, mom, 0.1, 10)
    back, mom_back = leapfrog(theory, new, -mom_new, 0.1, 10)
    torch.testing.assert_close(back, phi, atol=1e-12, rtol=0)
    torch.testing.assert_close(-mom_back, mom, atol=1e-12, rtol=0)
    # the Jacobian of (φ, p) → (φ', p') has determinant 1
    z = torch.cat([phi[0].reshape(-1), mom[0].reshape(-1)])

    def flow(z):
        a, b = leapfrog(theory, z[:16].reshape(1, 4, 4), z[16:].reshape(1, 4, 4), 0.1, 10)
        return torch.cat([a.reshape(-1), b.reshape(-1)])

    jac = torch.autograd.functional.jacobian(flow, z)
    assert float(torch.linalg.det(jac)) == pytest.approx(1.0, abs=1e-10)


def test_free_field_matches_the_exact_propagator():
    """λ = 0: V⟨M²⟩ = 1/(2(1 − 4κ)) and G(r) = the inverse of K(p) = 2(1 − 2κ Σ cos p_μ)."""
    L, kappa = 8, 0.2
    x, report = run_mcmc(Phi4(kappa, 0.0), L, 4000, seed=0, chains=16)
    assert report["thermalisation"]["agree"] and 0.6 < report["hmc_acceptance"] < 0.95
    obs = measure(x, Phi4(kappa, 0.0), chains=16)
    chi = obs["chi2"]
    assert abs(chi.value - 1 / (2 * (1 - 4 * kappa))) < 4 * chi.error
    exact = free_field_propagator(L, kappa)
    for r, g in enumerate(obs["G"]):
        assert abs(g.value - float(exact[0, r])) < 4 * g.error + 1e-3, (r, g, float(exact[0, r]))
    assert abs(obs["m"].value) < 4 * obs["m"].error


def test_ising_exact_partition_function_equals_enumeration():
    for L in (2, 3, 4):
        for beta in (0.2, 0.44, 0.7):
            e = ising_enumerate(L, beta)
            assert ising_log_z(L, beta) == pytest.approx(e["log_z"], rel=1e-12)
            assert ising_energy_density(L, beta) == pytest.approx(e["energy_density"], abs=1e-7)


@pytest.mark.parametrize("L,beta", [(4, 0.44), (8, 0.44), (16, 0.3), (16, 0.5)])
def test_wolff_ising_energy_is_exact(L, beta):
    x, report = run_mcmc(Ising(beta), L, 3200, seed=L, chains=16)
    assert set(np.unique(x)) == {-1.0, 1.0}
    obs = measure(x, Ising(beta), chains=16)
    e = obs["action_density"]  # the energy density for Ising
    assert abs(e.value - ising_energy_density(L, beta)) < 4 * e.error, (e, ising_energy_density(L, beta))
    if L == 4:
        assert abs(obs["abs_m"].value - ising_enumerate(L, beta)["abs_m"]) < 4 * obs["abs_m"].error
    assert report["thermalisation"]["agree"]

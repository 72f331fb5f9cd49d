"""The exact sampler against Monte Carlo in the interacting, double-well regime of φ⁴.

Why λ > 0: the other end-to-end exactness tests run the free field (λ = 0), whose law is Gaussian
and whose exact denoiser is the network's Gaussian part (nets/gaussian.py) alone: they would pass
with the network's non-Gaussian part, or the divergence of it in log q, broken. Here κ = 0.3,
λ = 1 at L = 4: the local potential −φ² + φ⁴ has two wells, the magnetisation is bimodal, and
Binder's U = 1 − ⟨M⁴⟩/(3⟨M²⟩²) is ≈ 0.48, where every Gaussian law has exactly U = 0. The
corrected chain must agree with a Monte Carlo ensemble made in the test within k combined
Γ-method errors; the same comparison must fail for the raw model samples, for a target action
at a wrong λ, and for a log q with the divergence term's sign flipped.
"""

import numpy as np
import pytest
import torch

from physdiff import LoadedRun, config_from_dict, train
from physdiff.lattice import exact_sampler as es
from physdiff.lattice.action import Phi4
from physdiff.lattice.mc import run_mcmc
from physdiff.lattice.observables import measure
from physdiff.ode import standard_normal_log_prob

KAPPA, LAM, L, K = 0.3, 1.0, 4, 4.0
THEORY = Phi4(KAPPA, LAM)
NAMES = ("abs_m", "chi2", "binder", "action_density")
pytestmark = pytest.mark.slow  # trains a model (~10 s) and samples 3150 ODE proposals (~15 s)


@pytest.fixture(scope="module")
def reference():
    """Monte Carlo (HMC + Wolff, 16 chains as replicas): 8000 configurations, ~2 s."""
    x, report = run_mcmc(THEORY, L, 8000, seed=7, chains=16)
    assert report["thermalisation"]["agree"]
    return measure(x, THEORY, chains=16)


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """A run trained briefly (300 steps, ~10 s; its own Monte Carlo training set, seed 0) and its
    exact sampler: 3000 chain states (and a burn-in) from ODE proposals with log q and x_T."""
    cfg = config_from_dict({"data": {"dataset": "phi4", "n_train": 2000},
                            "theory": {"L": L, "kappa": KAPPA, "lam": LAM},
                            "model": {"mlp": {"width": 64}}, "train": {"steps": 300, "device": "cpu"}})
    run = LoadedRun(train(cfg, tmp_path_factory.mktemp("phi4") / "run", progress=False))
    return run, es.sample_exact(run, 3000, 0, snapshot_steps=(run.schedule.T,))


def z_scores(chain, reference):
    """(chain − Monte Carlo) / combined error for each observable; the chain's errors come from
    its own autocorrelation (an independence chain repeats states: τ_int > ½)."""
    obs = measure(np.asarray(chain, dtype=np.float64), THEORY)
    return {n: (obs[n].value - reference[n].value) / np.hypot(obs[n].error, reference[n].error) for n in NAMES}


def agrees(z):
    return all(abs(v) <= K for v in z.values())


def test_the_regime_is_far_from_gaussian(reference):
    u = reference["binder"]
    assert u.value > 0.4 and u.value > 50 * u.error  # a Gaussian proposal's U = 0: > 100 errors off


def test_corrected_chain_agrees_with_monte_carlo(exact, reference):
    run, ex = exact
    assert es.run_theory(run) == THEORY
    z = z_scores(ex.chain, reference)
    assert agrees(z), z
    rw = ex.report["reweighted"]  # the importance-weighted estimates (every proposal) agree too
    for name in ("abs_m", "chi2", "action_density"):
        ref = reference[name]
        assert abs(rw[name]["value"] - ref.value) <= K * np.hypot(rw[name]["error"], ref.error), (name, rw[name])
    # a useful sampler, and log q's integration error far below the statistical errors
    assert ex.report["acceptance"] > 0.4 and ex.report["ess_per_sample"] > 0.4, ex.report
    assert ex.report["log_q_check"]["largest_shift_in_errors"] < 0.5, ex.report["log_q_check"]


def test_raw_samples_fail_the_same_comparison(exact, reference):
    """The model alone is biased (its S/V is off by ~8 errors, the other observables by ~2): the comparison can fail."""
    z = z_scores(exact[1].proposals, reference)
    assert not agrees(z), z


def test_a_wrong_lambda_in_the_target_is_detected(exact, reference):
    """The same proposals and log q, the chain run with the action at λ = 0.8 instead of 1."""
    ex = exact[1]
    wrong = es.metropolis(Phi4(KAPPA, 0.8), ex.proposals, ex.log_q, seed=0, burn_in=ex.report["burn_in"])
    z = z_scores(wrong.chain, reference)
    assert not agrees(z), z


def test_a_flipped_divergence_in_log_q_is_detected(exact, reference):
    """log q = log N(x_T) − ∫∇·f du (+ a constant Jacobian); flipping the divergence term's sign
    gives 2 log N(x_T) − log q (up to a constant, which cancels in the chain's ratios)."""
    run, ex = exact
    x_T = torch.from_numpy(ex.snapshots[run.schedule.T]).double().flatten(1)
    flipped = 2 * standard_normal_log_prob(x_T).numpy() - ex.log_q
    wrong = es.metropolis(THEORY, ex.proposals, flipped, seed=0, burn_in=ex.report["burn_in"])
    z = z_scores(wrong.chain, reference)
    assert not agrees(z), z

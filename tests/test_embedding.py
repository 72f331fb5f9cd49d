"""Ising made exact through a continuous embedding, and log Z from the exact sampler's weights.

The Hubbard–Stratonovich relaxation (Zhang et al. 2012) is checked formula by formula against
enumeration of every spin state (its action is the marginal of the joint law, its log Z offset
gives Kaufman's log Z), its two exact draws (x | s, s | x) against their laws, and the whole
chain on proposals of a known density against exact finite-lattice results."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from physdiff.cli import main
from physdiff.lattice import exact_sampler as es
from physdiff.lattice.action import Ising, Phi4
from physdiff.lattice.embedding import HubbardStratonovich
from physdiff.lattice.exact import free_field_log_z, ising_enumerate, ising_log_z


def adjacency(L):
    """J = Σ_μ (T_μ + T_μ⁻¹) on the L×L torus as a dense V×V matrix (entries 2 at L = 2)."""
    V = L * L
    J = np.zeros((V, V))
    for i, j in itertools.product(range(L), repeat=2):
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            J[i * L + j, ((i + di) % L) * L + (j + dj) % L] += 1
    return J


@pytest.mark.parametrize(("L", "beta", "shift"), [(2, 0.44, 0.5), (3, 0.3, 1.0), (3, 0.6, 2.0)])
def test_action_is_the_marginal_of_the_joint_law(L, beta, shift):
    """e^{−S_x} = Σ_s exp(−½ xᵀW⁻¹x + s·x) for every x (dense W, every spin state), and
    log Z_x + offset = log Z of the Ising model (enumeration and Kaufman)."""
    hs = HubbardStratonovich(beta, L, shift)
    V = L * L
    W = beta * adjacency(L) + (4 * beta + shift) * np.eye(V)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(W)), np.sort(hs.eigenvalues().numpy().ravel()), rtol=1e-12)
    states = np.array(list(itertools.product([-1.0, 1.0], repeat=V)))
    x = np.random.default_rng(0).normal(size=(6, V)) * 2
    Winv = np.linalg.inv(W)
    joint = np.array([np.logaddexp.reduce(-0.5 * xi @ Winv @ xi + states @ xi) for xi in x])
    S = hs.action(torch.from_numpy(x.reshape(-1, L, L))).numpy()
    np.testing.assert_allclose(-S, joint, rtol=0, atol=1e-10)
    log_zx = (0.5 * V * math.log(2 * math.pi) + 0.5 * np.linalg.slogdet(W)[1]
              + np.logaddexp.reduce(0.5 * np.einsum("si,ij,sj->s", states, W, states)))
    assert log_zx + hs.log_z_offset() == pytest.approx(ising_enumerate(L, beta)["log_z"], abs=1e-10)
    assert log_zx + hs.log_z_offset() == pytest.approx(ising_log_z(L, beta), abs=1e-10)


def test_large_fields_keep_the_action_finite():
    hs = HubbardStratonovich(0.44, 4)
    x = torch.full((1, 4, 4), 800.0, dtype=torch.float64)  # 2cosh(800) overflows; log 2cosh does not
    assert torch.isfinite(hs.action(x)).all()


def test_lift_draws_x_given_the_spins():
    """x | s ~ N(W s, W): the mean and covariance of many lifts of one spin configuration."""
    L, beta = 3, 0.44
    hs = HubbardStratonovich(beta, L, 1.0)
    W = beta * adjacency(L) + hs.c * np.eye(L * L)
    s = np.where(np.random.default_rng(1).random((L, L)) < 0.5, -1.0, 1.0)
    n = 40_000
    x = hs.lift(np.broadcast_to(s, (n, L, L)), np.random.default_rng(2)).reshape(n, -1)
    mean_err = np.sqrt(np.diag(W) / n)
    assert np.all(np.abs(x.mean(0) - W @ s.ravel()) < 4.5 * mean_err)
    cov = np.cov(x, rowvar=False)
    cov_err = np.sqrt((W**2 + np.outer(np.diag(W), np.diag(W))) / n)
    assert np.all(np.abs(cov - W) < 4.5 * cov_err)


def test_project_draws_the_spins_given_x():
    """P(s_i = +1 | x) = σ(2 x_i) = e^{x_i} / 2cosh x_i, site by site, for distinct configurations
    (the uniforms of a configuration are a function of its own bytes: reproducible, batch-free)."""
    hs = HubbardStratonovich(0.44, 4)
    rng = np.random.default_rng(3)
    n = 20_000
    x = rng.normal(size=(n, 4, 4)).astype(np.float32)
    x[:, 0, 0] = 0.3
    x[:, 1, 2] = -1.1
    s = hs.project(x)
    assert set(np.unique(s)) == {-1.0, 1.0} and s.dtype == np.float32
    for (i, j), v in (((0, 0), 0.3), ((1, 2), -1.1)):
        p = 0.5 * (1 + math.tanh(v))
        assert abs((s[:, i, j] == 1).mean() - p) < 4.5 * math.sqrt(p * (1 - p) / n)
    np.testing.assert_array_equal(hs.project(x[:7]), s[:7])  # the same configuration, the same spins
    np.testing.assert_array_equal(hs.project(x[5:9]), s[5:9])


def test_the_chain_of_a_known_proposal_is_exact():
    """Proposals from a Gaussian q of known density (not the target): after Metropolis against
    e^{−S_x} and the exact read-out, log Z, the energy density and ⟨|M|⟩ agree with the exact
    L = 3 results within 3.5 errors."""
    L, beta = 3, 0.44
    hs = HubbardStratonovich(beta, L, 1.0)
    W = beta * adjacency(L) + hs.c * np.eye(L * L)
    cov = W + W @ W  # roughly the embedded law's covariance, broad enough to cover it
    chol = np.linalg.cholesky(cov)
    n = 30_000
    z = np.random.default_rng(4).normal(size=(n, L * L))
    x = z @ chol.T
    log_q = (-0.5 * (z**2).sum(1) - np.log(np.diag(chol)).sum() - 0.5 * L * L * math.log(2 * math.pi))
    out = es.metropolis(Ising(beta), x.reshape(n, L, L), log_q, seed=5, burn_in=100, embedding=hs)
    exact = ising_enumerate(L, beta)
    r = out.report
    assert set(np.unique(out.chain)) == {-1.0, 1.0} and out.chain.shape == (n - 100, L, L)
    assert abs(r["log_z"]["value"] - exact["log_z"]) < 3.5 * r["log_z"]["error"]
    assert r["log_z"]["bootstrap_error"] == pytest.approx(r["log_z"]["error"], rel=0.3)
    rw = r["reweighted"]
    assert abs(rw["action_density"]["value"] - exact["energy_density"]) < 3.5 * rw["action_density"]["error"]
    assert abs(rw["abs_m"]["value"] - exact["abs_m"]) < 3.5 * rw["abs_m"]["error"]
    chain_e = Ising(beta).density(torch.from_numpy(out.chain.astype(np.float64))).numpy()
    from physdiff.stats import gamma_method

    est = gamma_method(chain_e)
    assert abs(est.value - exact["energy_density"]) < 3.5 * est.error
    assert r["embedding"]["name"] == "hubbard-stratonovich" and "warning" not in r["log_z"]


def test_log_z_error_formula_and_warning():
    """σ(log Ẑ)² = (1/ESS₁ − 1)/N; equal weights: exact, error 0; one dominant weight: flagged."""
    flat = es.log_partition_function(np.full(100, 2.0))
    assert flat["value"] == pytest.approx(2.0) and flat["error"] == pytest.approx(0.0, abs=1e-12)
    lw = np.random.default_rng(0).normal(size=4000)
    res = es.log_partition_function(lw, offset=1.5)
    w = np.exp(lw)
    assert res["value"] == pytest.approx(math.log(w.mean()) + 1.5, rel=1e-12)
    ess1 = w.mean() ** 2 / (w**2).mean()
    assert res["error"] == pytest.approx(math.sqrt((1 / ess1 - 1) / len(w)), rel=1e-10)
    spiky = es.log_partition_function(np.r_[np.zeros(50), 30.0])
    assert "unreliable" in spiky["warning"] and spiky["max_weight_share"] > 0.99


def test_free_field_log_z_is_the_gaussian_integral():
    """The closed form against the dense determinant of A = 2(1 − κ J)."""
    for L, kappa in ((2, 0.1), (4, 0.2), (5, 0.24)):
        A = 2 * (np.eye(L * L) - kappa * adjacency(L))
        dense = 0.5 * L * L * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(A)[1]
        assert free_field_log_z(L, kappa) == pytest.approx(dense, abs=1e-10)
        phi = np.random.default_rng(0).normal(size=(3, L, L))
        S = Phi4(kappa, 0.0).action(torch.from_numpy(phi)).numpy()  # S = ½ φᵀAφ: the same A
        np.testing.assert_allclose(S, 0.5 * np.einsum("bi,ij,bj->b", phi.reshape(3, -1), A, phi.reshape(3, -1)))


# ---------------------------------------------------------------- a trained run, end to end

FAST = ["--steps", "300", "--width", "32", "--timesteps", "100", "--n-train", "2000", "--batch-size", "128",
        "--device", "cpu", "--no-progress", "--L", "4", "--beta", "0.44"]


@pytest.fixture(scope="module")
def ising_hs_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hs") / "run"
    assert main(["train", "--dataset", "ising", "--out", str(out), *FAST]) == 0
    return out


def test_ising_runs_are_exact_by_default(ising_hs_run, tmp_path, capsys):
    """physdiff train --dataset ising trains on the embedded variable; sample --metropolis writes
    spins exactly ±1 with the φ⁴ JSON and log Z, which agrees with Kaufman's within 4 errors."""
    text = (ising_hs_run / "config.toml").read_text()
    assert 'embedding = "hubbard-stratonovich"' in text
    out = tmp_path / "chain.npy"
    assert main(["sample", str(ising_hs_run), "--metropolis", "--n", "1500", "--out", str(out)]) == 0
    chain = np.load(out)
    assert chain.shape == (1500, 4, 4) and set(np.unique(chain)) == {-1.0, 1.0}
    info = json.loads(out.with_suffix(".json").read_text())
    for key in ("acceptance", "ess_per_sample", "ess_per_sample_error", "tau_int_abs_m_chain", "reweighted",
                "log_z", "free_energy_density", "burn_in", "chain_index"):
        assert key in info
    exact = ising_enumerate(4, 0.44)
    lz = info["log_z"]
    assert abs(lz["value"] - ising_log_z(4, 0.44)) < 4 * lz["error"] + 0.02 and lz["error"] < 0.2
    e = info["reweighted"]["action_density"]
    assert abs(e["value"] - exact["energy_density"]) < 4 * e["error"]
    assert info["free_energy_density"]["value"] == pytest.approx(-lz["value"] / 16)
    assert main(["observables", str(out)]) == 0  # the chain is an Ising ensemble
    capsys.readouterr()
    # raw samples are spins drawn exactly given the model's x; a density of them is refused
    assert main(["sample", str(ising_hs_run), "--n", "8", "--log-prob", str(tmp_path / "q.npy"),
                 "--out", str(tmp_path / "s.npy")]) == 2
    assert "no density on the spins" in capsys.readouterr().err


def test_a_model_of_another_beta_is_still_exact(ising_hs_run):
    """A model trained at β = 0.44 used as the proposal for β = 0.40 (the target's own embedding):
    log Z and the energy density are those of β = 0.40 within 4 errors."""
    from physdiff.run import LoadedRun

    ex = es.sample_exact(LoadedRun(ising_hs_run), 1500, 3, theory=Ising(0.40))
    lz, e = ex.report["log_z"], ex.report["reweighted"]["action_density"]
    assert abs(lz["value"] - ising_log_z(4, 0.40)) < 4 * lz["error"] + 0.02
    assert abs(e["value"] - ising_enumerate(4, 0.40)["energy_density"]) < 4 * e["error"]
    assert ex.report["embedding"]["log_z_offset"] == pytest.approx(HubbardStratonovich(0.40, 4).log_z_offset())


def test_embedding_config_and_records(ising_hs_run, tmp_path, capsys):
    import shutil

    from physdiff.config import config_from_dict
    from physdiff.errors import PhysdiffError

    with pytest.raises(PhysdiffError, match="has no such embedding"):
        config_from_dict({"data": {"dataset": "phi4", "embedding": "hubbard-stratonovich"}})
    with pytest.raises(PhysdiffError, match="is for lattice theories with discrete spins"):
        config_from_dict({"data": {"dataset": "moons", "embedding": "hubbard-stratonovich"}})
    with pytest.raises(PhysdiffError, match="embedding_shift = 2 applies to a continuous embedding"):
        config_from_dict({"data": {"dataset": "phi4", "embedding_shift": 2.0}})
    old = config_from_dict({"version": 4, "data": {"dataset": "ising"}, "theory": {"L": 4, "beta": 0.44}})
    assert old.data.embedding == "none" and old.model.gaussian == "none"  # runs of before: spins themselves
    edited = tmp_path / "edited"
    shutil.copytree(ising_hs_run, edited)
    cfg = (edited / "config.toml").read_text().replace("embedding_shift = 1.0", "embedding_shift = 2.0")
    (edited / "config.toml").write_text(cfg)
    assert main(["sample", str(edited), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 2
    assert "but the weights were trained on" in capsys.readouterr().err


def test_spin_runs_refuse_the_exact_sampler(tmp_path, capsys):
    out = tmp_path / "spins"
    assert main(["train", "--dataset", "ising", "--embedding", "none", "--out", str(out), "--steps", "5",
                 "--width", "8", "--timesteps", "30", "--n-train", "64", "--L", "4", "--device", "cpu",
                 "--no-progress"]) == 0
    assert main(["sample", str(out), "--metropolis", "--n", "8", "--out", str(tmp_path / "c.npy")]) == 2
    assert "learnt the spins themselves" in capsys.readouterr().err


def test_log_z_differences():
    """One set of proposals, two targets: the difference of two Gaussian log Z's (exact), with an
    error far below that of two independent estimates; two runs: errors in quadrature."""
    rng = np.random.default_rng(7)
    n = 20_000
    x = rng.normal(size=n) * 1.3  # q = N(0, 1.3²)
    log_q = -0.5 * (x / 1.3) ** 2 - math.log(1.3 * math.sqrt(2 * math.pi))
    lw_a, lw_b = -0.5 * x**2 / 1.0 - log_q, -0.5 * x**2 / 1.1 - log_q  # Z = √(2π s²)
    d = es.log_z_difference(lw_a, lw_b)
    assert abs(d["value"] - math.log(math.sqrt(1.1))) < 3.5 * d["error"]
    za, zb = es.log_partition_function(lw_a), es.log_partition_function(lw_b)
    indep = es.log_z_difference_of(za, zb)
    assert indep["value"] == pytest.approx(d["value"], abs=1e-12)
    assert d["error"] < 0.3 * indep["error"]

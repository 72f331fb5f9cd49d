"""Diffusion on the lattice: exact φ → −φ symmetry, lattice symmetries as augmentation, and the
exact sampler (Metropolis–Hastings with the model's own density) against the free field."""

import json
import math

import numpy as np
import pytest
import torch

from physdiff import LoadedRun
from physdiff.cli import main
from physdiff.lattice import exact_sampler as es
from physdiff.lattice.action import Phi4
from physdiff.lattice.data import random_lattice_symmetry
from physdiff.stats import gamma_method

TRAIN = ["--L", "4", "--lam", "0", "--n-train", "2000", "--width", "64", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def wrong_model(tmp_path_factory):
    """A deliberately wrong model of the free field at κ = 0.15: trained (briefly) at κ = 0.17,
    so its χ₂ is ~1.5 where the target's is 1.25 — wider than the target, so the weights
    w = e^{−S}/q stay bounded (a proposal narrower than the target would leave them unbounded
    and the chain slow to correct it)."""
    out = tmp_path_factory.mktemp("lattice") / "ff"
    assert main(["train", "--dataset", "phi4", "--kappa", "0.17", "--steps", "300", "--out", str(out), *TRAIN]) == 0
    return LoadedRun(out)


def test_free_field_metropolis_is_exact(wrong_model):
    """Raw samples are far off the exact V⟨M²⟩ = 1/(2(1 − 4κ)) = 1.25; the Metropolis chain with
    e^{−S} and the model's exact log q, and the reweighted estimate, agree with it."""
    theory, V, n = Phi4(0.15, 0.0), 16, 4000
    res = wrong_model.sample(n, 1, sampler="ode", log_prob=True)
    x = res.samples[:, 0].astype(np.float64)
    action = theory.action(torch.from_numpy(x)).numpy()
    log_w = es.log_weights(action, res.log_prob)
    idx, acceptance = es.independence_metropolis(log_w, seed=0)
    m = x.reshape(n, -1).mean(1)
    raw, chain = gamma_method(V * m**2), gamma_method(V * m[idx] ** 2)
    exact = 1 / (2 * (1 - 4 * 0.15))
    assert (raw.value - exact) / raw.error > 5  # the model is wrong ...
    assert abs(chain.value - exact) < 3 * chain.error  # ... the chain is not
    rw = es.reweighted({"chi2": V * m**2}, log_w)["chi2"]
    assert abs(rw["value"] - exact) < 3 * rw["error"]
    s = gamma_method(action[idx] / V)  # equipartition: ⟨S⟩/V = 1/2 for a quadratic action
    assert abs(s.value - 0.5) < 3 * s.error
    assert 0.3 < acceptance < 1.0 and es.summary(log_w)["ess_per_sample"] > 0.5
    # log Z of the target (a wrong model still gives it, from the same weights), against the
    # Gaussian integral (V/2) log 2π − ½ log det A
    from physdiff.lattice.exact import free_field_log_z

    lz = es.log_partition_function(log_w)
    assert abs(lz["value"] - free_field_log_z(4, 0.15)) < 3 * lz["error"] and lz["error"] < 0.05
    assert "warning" not in lz


def test_solver_tolerance_does_not_matter(wrong_model):
    """The density that enters the acceptance ratio is that of the map actually run: RK4 on the
    default 12 steps (a v-predicting run) and on 72 steps give the same samples (within 1e-2) and
    log q (within 2e-2 nats for 16 sites) — far below the spread of log w (~0.5 nats here) that
    decides acceptance (benchmarks/README.md measures it for the L = 8 model against dopri5)."""
    ra = wrong_model.sample(64, 3, sampler="ode", log_prob=True)
    a, la = ra.samples, ra.log_prob
    rb = wrong_model.sample(64, 3, sampler="ode", log_prob=True, method="rk4", steps=72)
    b, dlq = rb.samples, la - rb.log_prob
    log_w = es.log_weights(Phi4(0.15, 0.0).action(torch.from_numpy(a[:, 0].astype(np.float64))).numpy(), la)
    assert np.abs(a - b).max() < 1e-2 and np.abs(dlq).max() < 2e-2
    assert dlq.std() < 0.05 * log_w.std()


def test_evaluate_against_the_reference_monte_carlo(wrong_model, tmp_path, capsys):
    """evaluate compares with an independent Monte Carlo ensemble of the run's theory (κ = 0.17):
    a second Monte Carlo ensemble of that theory agrees within errors, one of κ = 0.15 does not;
    the CLI prints the table, plot writes the lattice figures, --nll is refused."""
    from physdiff.evaluation import evaluate, format_report
    from physdiff.lattice.data import lattice_training_set

    def mc(kappa, seed):
        theory = Phi4(kappa, wrong_model.theory.lam)
        return lattice_training_set(theory, wrong_model.cfg.theory["L"], 2000, seed)[0][:, None]

    same = evaluate(wrong_model, samples=mc(0.17, 5), log=lambda *a: None)
    assert same["kind"] == "lattice" and same["n_reference"] == 10_000
    assert max(abs(z) for z in same["z"].values()) < 4, same["z"]
    other = evaluate(wrong_model, samples=mc(0.15, 5), log=lambda *a: None)
    assert other["z"]["chi2"] < -5 and "chi2" in other["beyond_3_errors"]
    assert "χ₂ = V⟨M²⟩" in format_report(other)
    run = str(wrong_model.path)
    assert main(["evaluate", run, "--n", "400"]) == 0
    assert "Binder U_L" in capsys.readouterr().out
    assert main(["evaluate", run, "--nll"]) == 2
    assert "--nll is for vector data" in capsys.readouterr().err
    assert main(["plot", run, "--n", "400"]) == 0
    assert {"histograms.png", "correlator.png", "configurations.png"} <= {p.name for p in wrong_model.path.iterdir()}


def test_odd_network_makes_the_density_symmetric(wrong_model):
    """ε(−x) = −ε(x) by construction, so the flow maps −x_T to −x₀ with the same log q."""
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(32, 1, 4, 4, generator=g, dtype=torch.float64)
    plus = wrong_model.sample_normalized(x_T, sampler="ode", log_prob=True)
    minus = wrong_model.sample_normalized(-x_T, sampler="ode", log_prob=True)
    torch.testing.assert_close(minus.samples, -plus.samples, atol=1e-6, rtol=0)
    torch.testing.assert_close(minus.log_prob, plus.log_prob, atol=1e-6, rtol=0)


def test_lattice_symmetries_leave_the_action_invariant():
    theory = Phi4(0.27, 0.022)
    x = torch.randn(50, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = random_lattice_symmetry(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(theory.action(y[:, 0]), theory.action(x[:, 0]))
    torch.testing.assert_close(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert not torch.equal(x, y)


def test_independence_metropolis_targets_the_known_law():
    """Target N(0, 1), proposal N(0, 2²) with its exact density: the chain has variance 1."""
    rng = np.random.default_rng(0)
    y = 2 * rng.normal(size=20_000)
    log_q = -0.5 * (y / 2) ** 2 - np.log(2)
    idx, acc = es.independence_metropolis(-0.5 * y**2 - log_q, seed=1)
    v = gamma_method(y[idx] ** 2)
    assert abs(v.value - 1) < 4 * v.error and 0.4 < acc < 0.8


def test_cli_lattice_sampling_and_refusals(wrong_model, tmp_path, capsys):
    out = tmp_path / "chain.npy"
    assert main(["sample", str(wrong_model.path), "--metropolis", "--n", "128", "--out", str(out)]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert np.load(out).shape == (128, 4, 4) and info["params"]["model"] == "phi4"
    assert {"acceptance", "ess_per_sample", "reweighted", "tau_int_abs_m_chain"} <= set(info)
    assert main(["observables", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["sample", str(wrong_model.path), "--metropolis", "--n", "8", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_streamed_lattice_ensemble_is_the_same(wrong_model, tmp_path, monkeypatch, capsys):
    """A lattice ensemble written in chunks is (N, L, L) with its JSON, equal to one written at once."""
    import physdiff.sampling as sampling

    base = ["sample", str(wrong_model.path), "--n", "50", "--seed", "2", "--sampler", "ode", "--steps", "2"]
    assert main([*base, "--out", str(tmp_path / "a.npy")]) == 0
    monkeypatch.setattr(sampling, "STREAM_BYTES", 16 * 4 * 20)  # 20 configurations a chunk
    assert main([*base, "--out", str(tmp_path / "b.npy")]) == 0
    assert "in chunks of 20" in capsys.readouterr().out
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert b.shape == (50, 4, 4)
    np.testing.assert_array_equal(a, b)
    meta = [json.loads((tmp_path / f"{k}.json").read_text()) for k in "ab"]
    assert meta[0]["params"] == meta[1]["params"]


def test_sample_exact_is_the_recipe_written_once(wrong_model, tmp_path):
    """sample_exact = the run's density sampler (ODE proposals with log q) → the theory's action →
    the independence Metropolis chain and its report, with every intermediate; physdiff sample
    --metropolis writes exactly its chain and report (the run's own theory)."""
    from physdiff.errors import PhysdiffError
    from physdiff.samplers import density_sampler

    assert density_sampler().name == "ode" and density_sampler().exact_density
    theory = Phi4(0.15, 0.0)
    ex = es.sample_exact(wrong_model, 96, 4, theory=theory, steps=4)
    B = es.default_burn_in(96)
    assert B == 10 and ex.report["burn_in"] == B and ex.chain.shape == (96, 4, 4) and len(ex.proposals) == 96 + B
    res = wrong_model.sample(96 + B, 4, sampler="ode", log_prob=True, steps=4)
    np.testing.assert_array_equal(ex.proposals, res.samples[:, 0])
    np.testing.assert_array_equal(ex.log_q, res.log_prob)
    chain, report = es.metropolis_chain(theory, res.samples[:, 0], res.log_prob, seed=4, burn_in=B)
    np.testing.assert_array_equal(ex.chain, chain)
    check = ex.report.pop("log_q_check")  # the solver check (test_log_q_check_...) comes on top
    # and log Z is then the one moved by it (its error covering the solver), the chain's own beside it
    refined = es.refined_log_z(report["log_z"], check)
    assert ex.report.pop("log_z_refined") == ex.report["log_z"] == refined
    assert ex.report.pop("log_z_raw") == report["log_z"]
    assert ex.report["free_energy_density"] == {"value": -refined["value"] / 16, "error": refined["error"] / 16}
    assert check["n"] == es.default_log_q_check(96 + B) == 16 and check["solver"] == "rk4 4 steps"
    report = report | {"log_z": refined, "free_energy_density": ex.report["free_energy_density"]}
    assert json.dumps(ex.report, default=float) == json.dumps(report, default=float)
    np.testing.assert_array_equal(ex.chain, ex.proposals[ex.indices])
    # the burn-in steps are run, then dropped: the kept chain is the full chain's tail
    full, _ = es.independence_metropolis(ex.log_w, seed=4)
    np.testing.assert_array_equal(ex.indices, full[B:])
    assert ex.report["n_proposals"] == 96 + B  # the importance weights use every proposal
    with pytest.raises(PhysdiffError, match="n >= 2"):
        es.sample_exact(wrong_model, 1, 0, steps=4)
    np.testing.assert_allclose(ex.log_w, -ex.action - ex.log_q, rtol=1e-12)
    assert ex.sampler == "ode" and ex.options["steps"] == 4 and ex.nfe == 16 and ex.log_q.dtype == np.float64
    out = tmp_path / "c.npy"
    assert main(["sample", str(wrong_model.path), "--metropolis", "--n", "96", "--seed", "4", "--steps", "4",
                 "--out", str(out)]) == 0
    own = es.sample_exact(wrong_model, 96, 4, steps=4)  # the run's theory, κ = 0.17
    np.testing.assert_array_equal(np.load(out), own.chain)
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["acceptance"] == own.report["acceptance"] and info["params"] == es.run_theory(wrong_model).params
    with pytest.raises(PhysdiffError, match="has no exact log-density"):
        es.sample_exact(wrong_model, 8, 0, sampler="ddim")
    with pytest.raises(PhysdiffError, match="has no exact log-density"):
        wrong_model.sample(8, 0, sampler="ddim", log_prob=True)


def test_log_q_check_measures_the_solvers_error(wrong_model):
    """The solver check re-integrates the first k proposals from the same x_T with twice the steps:
    its log q and samples are those of a plain sample call with those steps; on 2 RK4 steps it
    sees an error that 16 steps do not have (16 steps leave float32 round-off, a spread of Δlog q
    several times smaller), and the
    shifts it reports are the paired differences of the reweighted means."""
    theory = Phi4(0.15, 0.0)
    coarse = es.sample_exact(wrong_model, 64, 5, theory=theory, steps=2, log_q_check=24)
    chk = coarse.report["log_q_check"]
    fine = wrong_model.sample(24, 5, sampler="ode", log_prob=True, steps=4)
    np.testing.assert_allclose(chk["dlog_q"]["mean"], np.mean(fine.log_prob - coarse.log_q[:24]), rtol=1e-9)
    assert chk["max_abs_dx"] == pytest.approx(float(np.abs(fine.samples[:, 0] - coarse.proposals[:24]).max()))
    assert chk["n"] == 24 and chk["solver"] == "rk4 2 steps" and chk["check"] == "rk4 4 steps"
    # the shift of a reweighted mean: fine weights on the fine samples against the run's on its own
    x_f = fine.samples[:, 0].astype(np.float64)
    lw_f = es.log_weights(theory.action(torch.from_numpy(x_f)).numpy(), fine.log_prob)
    m_f, m_c = x_f.reshape(24, -1).mean(1), coarse.proposals[:24].reshape(24, -1).mean(1)
    want = (es.reweighted({"a": np.abs(m_f)}, lw_f)["a"]["value"]
            - es.reweighted({"a": np.abs(m_c)}, coarse.log_w[:24])["a"]["value"])
    assert chk["shifts"]["abs_m"]["value"] == pytest.approx(want, rel=1e-5)  # float32 samples
    assert chk["shifts"]["abs_m"]["in_errors"] == pytest.approx(want / coarse.report["reweighted"]["abs_m"]["error"])
    good = es.sample_exact(wrong_model, 64, 5, theory=theory, steps=16, log_q_check=24).report["log_q_check"]
    assert good["dlog_q"]["std"] < 0.3 * chk["dlog_q"]["std"] and good["max_abs_dx"] < chk["max_abs_dx"]
    assert "log_q_check" not in es.sample_exact(wrong_model, 16, 5, steps=2, log_q_check=0).report


def test_solver_check_flags_a_shift_beyond_half_an_error():
    """solver_check on synthetic proposals of a known density: a constant error in log q moves
    only log Z (by exactly minus that constant), an error that grows with |M| moves ⟨|M|⟩ too, and
    a shift beyond half an error is flagged by name."""
    rng = np.random.default_rng(0)
    theory, n = Phi4(0.15, 0.0), 400
    x = rng.normal(size=(n, 4, 4))
    log_q = -0.5 * (x**2).sum(axis=(1, 2)) - 8 * np.log(2 * np.pi)
    coarse = es.metropolis(theory, x, log_q, seed=0)
    same = es.solver_check(theory, coarse, x[:100], log_q[:100])
    assert same["dlog_q"]["max_abs"] == 0 and same["log_z_shift"]["value"] == 0 and "warning" not in same
    const = es.solver_check(theory, coarse, x[:100], log_q[:100] + 0.3)
    assert const["log_z_shift"]["value"] == pytest.approx(-0.3)
    assert abs(const["shifts"]["abs_m"]["value"]) < 1e-12 and "log_z by" in const["warning"]
    assert const["largest_shift_in_errors"] == pytest.approx(abs(const["log_z_shift"]["in_errors"]))
    # log Z with the finer solve: moved by the paired shift; a constant has no spread over the pairs
    ref = es.refined_log_z(coarse.report["log_z"], const)
    assert ref["value"] == pytest.approx(coarse.report["log_z"]["value"] - 0.3, abs=1e-12)
    # what twice the RK4 steps leave of the bias, |shift| / 15, is a systematic error of its own
    assert const["log_z_shift"]["error"] < 1e-12 and ref["solver_systematic"] == pytest.approx(0.3 / 15)
    assert ref["error"] == pytest.approx(math.hypot(coarse.report["log_z"]["error"], 0.3 / 15))
    assert ref["statistical_error"] == coarse.report["log_z"]["error"]
    m = np.abs(x[:100].reshape(100, -1).mean(1))
    tilted = es.solver_check(theory, coarse, x[:100], log_q[:100] - 3.0 * (m - m.mean()))
    assert tilted["shifts"]["abs_m"]["value"] > 0 and "abs_m by" in tilted["warning"]
    assert tilted["log_z_shift"]["error"] > 0.01  # a spread over the pairs: the shift has an error of its own


def test_log_z_with_the_finer_solve_is_that_of_the_finer_proposals(wrong_model):
    """Checking every proposal (k = N): log Z with the finer solve is exactly the log Z of the
    N proposals integrated with twice the steps."""
    theory = Phi4(0.15, 0.0)
    n = 40 + es.default_burn_in(40)
    coarse = es.sample_exact(wrong_model, 40, 3, theory=theory, steps=2, log_q_check=n)
    fine = wrong_model.sample(n, 3, sampler="ode", log_prob=True, steps=4)
    x_f = fine.samples[:, 0].astype(np.float64)
    lw_f = es.log_weights(theory.action(torch.from_numpy(x_f)).numpy(), fine.log_prob)
    want = es.log_partition_function(lw_f)["value"]
    ref = coarse.report["log_z_refined"]
    assert ref["value"] == pytest.approx(want, abs=1e-9)
    assert abs(want - coarse.report["log_z_raw"]["value"]) > 1e-4  # two steps against four do differ
    assert ref["solver"] == "rk4 4 steps" and ref["error"] >= coarse.report["log_z_raw"]["error"]
    assert coarse.report["log_z"] == ref  # the log Z a user reads first is the finer solve's


def test_cli_metropolis_writes_the_solver_check(wrong_model, tmp_path, capsys):
    """sample --metropolis reports the solver check in its JSON and its summary line; --log-q-check
    without --metropolis is refused in one line."""
    from conftest import one_line_error

    out = tmp_path / "c.npy"
    assert main(["sample", str(wrong_model.path), "--metropolis", "--n", "40", "--steps", "4", "--log-q-check", "8",
                 "--out", str(out)]) == 0
    assert "solver check on 8 proposals (rk4 8 steps against rk4 4 steps)" in capsys.readouterr().out
    chk = json.loads(out.with_suffix(".json").read_text())["log_q_check"]
    assert chk["n"] == 8 and set(chk["shifts"]) == {"abs_m", "chi2", "action_density"}
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["log_z_refined"]["value"] == pytest.approx(info["log_z_raw"]["value"] + chk["log_z_shift"]["value"])
    assert info["log_z"] == info["log_z_refined"]
    line = one_line_error(capsys, ["sample", str(wrong_model.path), "--n", "8", "--log-q-check", "4",
                                   "--out", str(tmp_path / "d.npy")])
    assert "log_q_check (--log-q-check) applies to Metropolis chains only" in line


def test_free_energy_difference_of_two_couplings_from_one_run(wrong_model, tmp_path, capsys):
    """One set of proposals weighted for κ_a and κ_b: log Z_b − log Z_a against the free field's
    exact Gaussian integrals, within 3 errors, with an error far below that of two independent
    log Z; and d log Z/dκ = 2⟨Σ_{x,μ} φ_x φ_{x+μ̂}⟩ (S's κ-derivative is −2Σφφ): the chain's
    correlator at the midpoint times Δκ agrees with the difference. The CLI (--kappa with
    --metropolis) writes it into the JSON."""
    from physdiff.lattice.exact import free_field_log_z
    from physdiff.lattice.theory import neighbour_sum

    ka, kb = 0.145, 0.155
    ex = es.sample_exact(wrong_model, 1500, 8, theory=Phi4(kb, 0.0), log_q_check=0, steps=6)
    fd = es.free_energy_difference(ex, Phi4(ka, 0.0))
    exact = free_field_log_z(4, kb) - free_field_log_z(4, ka)
    d = fd["log_z"]
    two_runs = math.sqrt(2) * ex.report["log_z"]["error"]  # the error of two independent estimates
    assert abs(d["value"] - exact) < 3 * d["error"] and d["error"] < 0.5 * two_runs
    assert fd["from"]["kappa"] == ka and fd["to"]["kappa"] == kb
    assert fd["free_energy_density"]["value"] == pytest.approx(-d["value"] / 16)
    mid = es.sample_exact(wrong_model, 1500, 9, theory=Phi4(0.15, 0.0), log_q_check=0, steps=6)
    phi = torch.from_numpy(mid.chain.astype(np.float64))
    links = gamma_method((phi * neighbour_sum(phi)).sum(dim=(-2, -1)).numpy())  # Σ_{x,μ} φ_x φ_{x+μ̂}
    assert abs(2 * links.value * (kb - ka) - exact) < 3 * 2 * links.error * (kb - ka) + 3 * d["error"]
    out = tmp_path / "kb.npy"
    assert main(["sample", str(wrong_model.path), "--metropolis", "--n", "200", "--steps", "4", "--kappa", "0.16",
                 "--out", str(out)]) == 0
    assert "log Z(φ⁴, κ = 0.16, λ = 0) − log Z(φ⁴, κ = 0.17, λ = 0)" in capsys.readouterr().out
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["params"]["kappa"] == 0.16 and info["free_energy_difference"]["from"]["kappa"] == 0.17
    from conftest import one_line_error

    assert "applies to --metropolis" in one_line_error(capsys, ["sample", str(wrong_model.path), "--n", "8",
                                                                "--kappa", "0.16", "--out", str(tmp_path / "x.npy")])
    assert "--beta is not a parameter of theory 'phi4'" in one_line_error(
        capsys, ["sample", str(wrong_model.path), "--metropolis", "--n", "8", "--beta", "0.3",
                 "--out", str(tmp_path / "y.npy")])


def test_scan_with_a_model_is_exact_at_every_coupling(wrong_model, tmp_path, capsys):
    """`scan --model`: the κ = 0.17 free-field run as the exact sampler of a κ scan at its L: at every κ
    the corrected χ₂ and log Z agree with the Gaussian integrals, the ESS/N falls away from the trained
    κ, and the figure of ESS/N against κ is written; a run of another L is refused before any Monte Carlo."""
    from physdiff.lattice.exact import free_field_log_z

    out = tmp_path / "scan"
    args = ["scan", "phi4", "--L", "4", "--lam", "0", "--kappa", "0.13,0.15,0.17", "--n", "256", "--chains", "4",
            "--model", str(wrong_model.path), "--model-n", "400", "--out", str(out), "-q"]
    assert main(args) == 0
    assert "model at L = 4, κ = 0.17: acceptance" in capsys.readouterr().out
    res = json.loads((out / "scan.json").read_text())
    assert res["model"]["trained_at"]["kappa"] == 0.17
    ess = {}
    for p in res["points"]:
        mp, k = p["model"], p["kappa"]
        chi2 = mp["metropolis"]["chi2"]
        assert abs(chi2["value"] - 1 / (2 * (1 - 4 * k))) < 3.5 * chi2["error"], (k, chi2)
        assert abs(mp["log_z"]["value"] - free_field_log_z(4, k)) < 3.5 * mp["log_z"]["error"], (k, mp["log_z"])
        ess[k] = mp["ess_per_sample"]
    assert ess[0.17] > ess[0.13]
    assert (out / "scan_model.png").is_file() and (out / "scan_model.csv").is_file()
    assert main([*args[:3], "6", *args[4:-2], str(tmp_path / "other"), "-q"]) == 2
    assert "trained at L = 4, which is not among the scan's sizes 6" in capsys.readouterr().err
    assert not (tmp_path / "other" / "ensembles").exists()

"""The fourth hostile-input round on the exact sampler, the Monte Carlo, observables and exports
(issue 38), class by class: never a silent NaN (every reported number finite, or one line saying
why not), no traceback (pyerrors' minimum per replica, a theory's action of the wrong shape, seeds
that are not seeds), bounded work (a burn-in refused as a value, not as out of memory), progress
within one batch, mcmc rounds n up to its chains, and (issue 37, item 4) the log Z a user reads
first is the finer solve's, with an error that covers the solver's bias."""

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import one_line_error
from physdiff import LoadedRun
from physdiff.cli import main
from physdiff.errors import PhysdiffError
from physdiff.lattice import Theory, param
from physdiff.lattice import exact_sampler as es
from physdiff.lattice.action import Ising, Phi4
from physdiff.stats import first_non_finite

_err = one_line_error


@pytest.fixture
def tiny_run(tiny_phi4_run):
    return tiny_phi4_run


@pytest.fixture(scope="module")
def free_field_run(tmp_path_factory):
    """φ⁴ at λ = 0, κ = 0.15, L = 4 (exact log Z: the Gaussian integral), trained briefly (~6 s)."""
    out = tmp_path_factory.mktemp("h4") / "ff"
    assert main(["train", "--dataset", "phi4", "--lam", "0", "--kappa", "0.15", "--L", "4", "--steps", "100",
                 "--width", "16", "--n-train", "500", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    return out


# ---------------------------------------------------------------- user theories, hostile ones


@dataclass(frozen=True)
class Flaky(Theory):
    """φ⁴ in the hopping form whose action is ``value`` (0: NaN, > 0: +inf, < 0: −inf) on about a
    share ``bad`` of the configurations (chosen by a hash of the configuration)."""

    name: ClassVar[str] = "flaky"
    kappa: float = param(0.15, lo=None)
    lam: float = param(0.0, lo=None)
    bad: float = param(0.0)
    value: float = param(0.0, lo=None)

    def action(self, phi: torch.Tensor) -> torch.Tensor:
        hop = phi * (torch.roll(phi, -1, -1) + torch.roll(phi, -1, -2))
        s = (-2 * self.kappa * hop + phi**2 + self.lam * (phi**2 - 1) ** 2).sum((-2, -1))
        if self.bad > 0:
            key = torch.frac(torch.abs(phi.sum((-2, -1))) * 1000.0)
            odd = math.nan if self.value == 0 else math.copysign(math.inf, self.value)
            s = torch.where(key < self.bad, torch.full_like(s, odd), s)
        return s


@dataclass(frozen=True)
class Squares(Theory):
    """An action of the wrong shape: one number per site, not per configuration."""

    name: ClassVar[str] = "squares"

    def action(self, phi: torch.Tensor) -> torch.Tensor:
        return phi**2


@dataclass(frozen=True)
class ColdNaN(Theory):
    """Finite on random configurations, NaN on the ordered one (every value +1): the cold start."""

    name: ClassVar[str] = "coldnan"

    def action(self, phi: torch.Tensor) -> torch.Tensor:
        s = (phi**2).sum((-2, -1))
        return torch.where((phi == 1).flatten(1).all(1), torch.full_like(s, math.nan), s)


def _proposals(n: int, seed: int = 0, L: int = 4):
    x = np.random.default_rng(seed).normal(size=(n, L, L))
    return x, -0.5 * (x**2).sum(axis=(1, 2)) - 0.5 * L * L * math.log(2 * math.pi)


def _finite_or_refused(fn):
    """fn() returns a report whose every number is finite, or raises a one-line PhysdiffError."""
    try:
        out = fn()
    except PhysdiffError as exc:
        assert "\n" not in str(exc)
        return None
    report = getattr(out, "report", out)
    assert first_non_finite(report) is None, first_non_finite(report)
    return report


# ---------------------------------------------------------------- 1. no silent NaN


@pytest.mark.parametrize("value, word", [(0.0, "1 nan"), (1.0, "+inf"), (-1.0, "-inf")])
def test_a_non_finite_action_on_the_proposals_is_refused_naming_the_theory(value, word):
    """NaN returned acceptance 0 and log Z nan; +inf a bare `math domain error`."""
    x, log_q = _proposals(200)
    theory = Flaky(bad=0.05, value=value)
    with pytest.raises(PhysdiffError, match=r"theory 'flaky' \(flaky, kappa = 0.15.*its action is not finite on "
                                            r"\d+ of the 200 proposals") as exc:
        es.metropolis(theory, x, log_q)
    assert word.split()[-1] in str(exc.value)


def test_a_non_finite_log_q_or_weight_is_refused():
    x, log_q = _proposals(100)
    log_q[[3, 7]] = [np.nan, -np.inf]
    with pytest.raises(PhysdiffError, match=r"log q is not finite for 2 of the 100 proposals \(1 nan, 1 ±inf\)"):
        es.metropolis(Phi4(0.15, 0.0), x, log_q)
    with pytest.raises(PhysdiffError, match=r"log weights .* are not finite for 1 of the 3"):
        es.log_partition_function(np.array([0.0, np.nan, 1.0]))
    with pytest.raises(PhysdiffError, match="not finite"):
        es.independence_metropolis(np.array([0.0, np.inf, 1.0]))


def test_sample_exact_refuses_a_theory_that_is_nan_on_its_proposals(tiny_run):
    run = LoadedRun(tiny_run)
    with pytest.raises(PhysdiffError, match=r"theory 'flaky'.*not finite on \d+ of the \d+ proposals"):
        es.sample_exact(run, 40, 0, theory=Flaky(bad=0.2), steps=2)
    with pytest.raises(PhysdiffError, match=r"theory 'squares'.*returned \(\d+, 4, 4\).*one number per"):
        es.sample_exact(run, 8, 0, theory=Squares(), steps=2, log_q_check=0)


def test_observables_of_a_degenerate_ensemble_say_why_not(tmp_path, capsys):
    """An ensemble of zeros gave binder null and ξ₂'s error null with exit 0."""
    np.save(tmp_path / "z.npy", np.zeros((64, 4, 4), np.float32))
    (tmp_path / "z.json").write_text(json.dumps({"params": {"model": "phi4", "kappa": 0.2, "lam": 0.02}}))
    line = _err(capsys, ["observables", str(tmp_path / "z.npy"), "--json"])
    assert "binder" in line and "⟨M²⟩ = 0" in line and "z.npy" in line


# ---------------------------------------------------------------- 6. property-based: finite or refused


@settings(max_examples=40, deadline=None)
@given(kappa=st.one_of(st.floats(-0.3, 0.3), st.sampled_from([1e3, -1e6, 1e150, 1e300, -1e300])),
       lam=st.one_of(st.floats(0, 10), st.sampled_from([1e100, 1e308])),
       bad=st.sampled_from([0.0, 0.0, 0.01, 0.5, 1.0]), value=st.sampled_from([0.0, 1.0, -1.0]),
       n=st.integers(2, 60), burn_in=st.integers(0, 5), seed=st.integers(0, 2**63 - 1))
def test_every_number_of_the_chain_is_finite_or_refused(kappa, lam, bad, value, n, burn_in, seed):
    x, log_q = _proposals(n + burn_in, seed % 1000)
    theory = Flaky(kappa, lam, bad, value)
    report = _finite_or_refused(lambda: es.metropolis(theory, x, log_q, seed=seed, burn_in=min(burn_in, n)))
    if report is not None:
        for key in ("acceptance", "ess_per_sample", "ess_per_sample_error"):
            assert math.isfinite(report[key])
        assert math.isfinite(report["log_z"]["value"]) and math.isfinite(report["log_z"]["error"])


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kappa=st.sampled_from([0.15, -0.2, 1e4, 1e300]), bad=st.sampled_from([0.0, 0.3]),
       value=st.sampled_from([0.0, 1.0]), n=st.integers(2, 20), check=st.sampled_from([0, 4]))
def test_every_number_of_sample_exact_is_finite_or_refused(tiny_run, kappa, bad, value, n, check):
    run = LoadedRun(tiny_run)
    report = _finite_or_refused(lambda: es.sample_exact(run, n, 1, theory=Flaky(kappa, 0.0, bad, value),
                                                        steps=2, log_q_check=check))
    if report is not None and check:
        assert "log_z_raw" in report and report["log_z"] == report["log_z_refined"]


@st.composite
def ensembles(draw):
    L, N = draw(st.sampled_from([2, 4])), draw(st.sampled_from([8, 16, 32]))
    chains = draw(st.sampled_from([c for c in (1, 2, 4) if N % c == 0]))
    kind = draw(st.sampled_from(["gauss", "constant", "zeros", "spins", "up"]))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    if kind == "gauss":
        x = rng.normal(size=(N, L, L)) * draw(st.sampled_from([1e-6, 1.0, 1e3]))
    elif kind == "constant":
        x = np.full((N, L, L), draw(st.floats(-5, 5)))
    elif kind == "zeros":
        x = np.zeros((N, L, L))
    elif kind == "spins":
        x = rng.choice([-1.0, 1.0], size=(N, L, L))
    else:
        x = np.ones((N, L, L))
    if kind in ("spins", "up"):
        theory = Ising(draw(st.floats(0.0, 2.0)))
    else:
        theory = Flaky(draw(st.sampled_from([0.2, -0.1, 1e300])), draw(st.sampled_from([0.0, 0.5, 1e308])),
                       draw(st.sampled_from([0.0, 0.2])))
    return x, theory, chains


@settings(max_examples=40, deadline=None)
@given(ensembles())
def test_every_observable_is_finite_or_refused(case):
    from physdiff.lattice.observables import as_table, measure

    x, theory, chains = case
    _finite_or_refused(lambda: as_table(measure(x, theory, chains=chains)))


# ---------------------------------------------------------------- 2. tracebacks


def test_pyerrors_export_of_short_chains_is_one_line(tmp_path, capsys):
    """Fewer than 5 configurations per chain: pyerrors' own ValueError, exit 1, before."""
    np.save(tmp_path / "few.npy", np.random.default_rng(0).normal(size=(32, 4, 4)).astype(np.float32))
    (tmp_path / "few.json").write_text(json.dumps({"params": {"model": "phi4", "kappa": 0.2, "lam": 0.02},
                                                   "chains": 16}))
    line = _err(capsys, ["observables", str(tmp_path / "few.npy"), "--pyerrors", str(tmp_path / "few.json.gz")])
    assert "at least 5 configurations per chain" in line and "32 in 16 chains (2 each)" in line
    assert not (tmp_path / "few.json.gz").exists()


def test_run_mcmc_refuses_an_action_of_the_wrong_shape_or_nan_where_the_chains_start():
    from physdiff.lattice.mc import run_mcmc

    with pytest.raises(PhysdiffError, match=r"theory 'squares'.*must return one number per configuration"):
        run_mcmc(Squares(), 4, 32)
    with pytest.raises(PhysdiffError, match=r"theory 'coldnan'.*not finite on 8 of the 16 starting configurations"):
        run_mcmc(ColdNaN(), 4, 32)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3", np.float64(2.0)])
def test_seeds_that_are_not_seeds_name_seed_in_the_python_api(tiny_run, seed):
    from physdiff.lattice.mc import run_mcmc

    run = LoadedRun(tiny_run)
    for call in (lambda: run_mcmc(Phi4(0.2, 0.02), 4, 32, seed=seed), lambda: es.sample_exact(run, 4, seed, steps=2),
                 lambda: run.sample(4, seed, steps=2), lambda: es.sample_exact(run, 4, 0, chain_seed=seed, steps=2)):
        with pytest.raises(PhysdiffError, match=r"seed = .* is not allowed; allowed: an integer >= 0"):
            call()


# ---------------------------------------------------------------- 3. bounded work


def test_a_burn_in_beyond_the_bound_is_refused_as_a_value(tiny_run, tmp_path, capsys):
    """--burn-in 100000000000 gave the generic out-of-memory line; 2000000 ran unbounded."""
    for burn_in in ("100000000000", "2000000"):
        line = _err(capsys, ["sample", str(tiny_run), "--metropolis", "--n", "100", "--burn-in", burn_in,
                             "--out", str(tmp_path / "c.npy")])
        assert f"burn-in {burn_in} is more than allowed for 100 kept chain steps; allowed: at most 10000" in line
    assert "is not an integer" in _err(capsys, ["sample", str(tiny_run), "--metropolis", "--burn-in", "1e11",
                                                "--out", str(tmp_path / "c.npy")])
    assert not list(tmp_path.iterdir())
    run = LoadedRun(tiny_run)
    with pytest.raises(PhysdiffError, match="at most 20000"):
        es.sample_exact(run, 20000, 0, burn_in=20001, steps=2)
    with pytest.raises(PhysdiffError, match=r"burn-in = 2.5 is not allowed"):
        es.sample_exact(run, 10, 0, burn_in=2.5, steps=2)


# ---------------------------------------------------------------- 4. progress within one batch


def test_the_ode_reports_within_one_batch(tiny_run, tmp_path, capsys, monkeypatch):
    """One batch of 8 proposals on 30 RK4 steps: the bar advances once, at its end; the solve
    reports its evaluations before that (12 minutes without a line, before, at L = 32)."""
    monkeypatch.setenv("PHYSDIFF_PROGRESS_INTERVAL", "0.001")
    assert main(["sample", str(tiny_run), "--n", "8", "--sampler", "ode", "--steps", "30", "--batch-size", "64",
                 "--log-prob", str(tmp_path / "lp.npy"), "--out", str(tmp_path / "s.npy")]) == 0
    err = capsys.readouterr().err
    inner = [line for line in err.splitlines() if "in progress: ODE evaluation (8 rows)" in line]
    assert len(inner) >= 2 and all(line.startswith("physdiff: sample (ode): 0/8 samples") for line in inner), err
    assert any("/120 (" in line for line in inner)  # 4 evaluations a step, 30 steps
    assert main(["sample", str(tiny_run), "--n", "8", "--metropolis", "--steps", "15", "--batch-size", "64",
                 "--out", str(tmp_path / "m.npy")]) == 0
    err = capsys.readouterr().err
    assert sum("exact sampler" in line and "in progress: ODE evaluation" in line for line in err.splitlines()) >= 2
    # the proposals' count holds the solver check's too: 8 + a burn-in of 10, then 16 checked
    assert "34/34 proposals done" in err, err


def test_pulses_only_where_a_bar_is_open():
    from physdiff import progress

    progress.pulse(1, 2, "nothing open")  # no bar: nothing, no error
    bar = progress.Progress(4, "job", "step", mode="lines", every=0.0)
    with progress.progress_bar(bar, 4, "job"):
        bar.pulse(1, 2, "inner")  # an interval of 0: a line per update, none per pulse
    assert bar._inner[:3] == ("inner", 1, 2)


# ---------------------------------------------------------------- 5. mcmc rounds n up


def test_mcmc_rounds_n_up_to_its_chains_and_says_so(tmp_path, capsys):
    """--n 100 with 16 chains was refused ("must be a multiple")."""
    out = tmp_path / "i.npy"
    assert main(["mcmc", "ising", "--L", "4", "--n", "100", "--out", str(out), "-q"]) == 0
    assert "wrote 112 configurations (16 chains; n = 100 rounded up to 112, a multiple of the 16 chains)" in \
        capsys.readouterr().out
    info = json.loads(out.with_suffix(".json").read_text())
    assert np.load(out).shape == (112, 4, 4) and info["n"] == 112 and info["n_requested"] == 100
    assert main(["mcmc", "ising", "--L", "4", "--n", "130", "--out", str(out), "--resume", "-q"]) == 0
    assert "to 144 configurations (16 chains, 32 new; n = 130 rounded up to 144" in capsys.readouterr().out
    assert "n_requested" in json.loads(out.with_suffix(".json").read_text())


# ---------------------------------------------------------------- issue 37, item 4: log Z covers the solver


def test_the_log_z_read_first_covers_the_solvers_bias(free_field_run, tmp_path, capsys):
    """On 3 RK4 steps the chain's own log Z is biased low by several of its errors (the solver's
    bias is systematic, not in its error); the log Z the summary line and the JSON give first is the
    finer solve's, whose error covers it, with the raw value beside it as log_z_raw."""
    from physdiff.lattice.exact import free_field_log_z

    out = tmp_path / "c.npy"
    assert main(["sample", str(free_field_run), "--metropolis", "--n", "300", "--seed", "1", "--steps", "3",
                 "--log-q-check", "100", "--out", str(out), "-q"]) == 0
    line = capsys.readouterr().out
    info = json.loads(out.with_suffix(".json").read_text())
    lz, raw, exact = info["log_z"], info["log_z_raw"], free_field_log_z(4, 0.15)
    assert abs(raw["value"] - exact) > 2.5 * raw["error"]  # the bias the raw error does not cover
    assert abs(lz["value"] - exact) < 3 * lz["error"]  # covered
    shift = info["log_q_check"]["log_z_shift"]
    assert lz["value"] == pytest.approx(raw["value"] + shift["value"]) and lz["statistical_error"] == raw["error"]
    assert lz["error"] == pytest.approx(math.sqrt(raw["error"] ** 2 + shift["error"] ** 2
                                                  + (abs(shift["value"]) / 15) ** 2))
    assert info["log_z_refined"] == lz and info["free_energy_density"]["value"] == pytest.approx(-lz["value"] / 16)
    assert f"log Z = {lz['value']:.4f} ± {lz['error']:.4f} (with the finer solve, rk4 6 steps" in line
    assert f"the run's own solve gives {raw['value']:.4f} ± {raw['error']:.4f}" in line

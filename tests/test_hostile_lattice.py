"""The third hostile-input round on lattice commands, class by class: what an ensemble's JSON
claims is checked against its array; a density is refused where there is none; seeds anywhere in
their range; outputs written together and one writer at a time; strict JSON; files that are not
what their name says; figures of a few configurations; a corrupt metrics.csv."""

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_LATTICE, one_line_error
from physdiff.cli import main

TINY = TINY_LATTICE
MAX_SEED = 2**63 - 1


_err = one_line_error


@pytest.fixture
def phi4_run(tiny_phi4_run):
    return tiny_phi4_run


@pytest.fixture(scope="module")
def ising_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("h3") / "ising"
    assert main(["train", "--dataset", "ising", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    out = tmp_path_factory.mktemp("h3") / "mc.npy"
    assert main(["mcmc", "phi4", "--L", "4", "--n", "64", "--out", str(out)]) == 0
    return out


def _copy(ensemble, folder, name, info=None, x=None):
    path = folder / f"{name}.npy"
    np.save(path, np.load(ensemble) if x is None else x)
    info = json.loads(ensemble.with_suffix(".json").read_text()) if info is None else info
    path.with_suffix(".json").write_text(info if isinstance(info, str) else json.dumps(info))
    return path


# ---------------------------------------------------------------- an ensemble's JSON


@pytest.mark.parametrize("chains", [0, -16, "sixteen", None, 64 + 16, 3, True, 1.5])
def test_chains_claim_is_checked(ensemble, tmp_path, capsys, chains):
    info = json.loads(ensemble.with_suffix(".json").read_text()) | {"chains": chains}
    err = _err(capsys, ["observables", str(_copy(ensemble, tmp_path, "c", info))])
    assert "chains" in err and "divides the 64 configurations" in err


def test_claims_of_another_file_are_refused(ensemble, tmp_path, capsys):
    info = json.loads(ensemble.with_suffix(".json").read_text())
    assert "L = 8" in _err(capsys, ["observables", str(_copy(ensemble, tmp_path, "a", info | {"L": 8}))])
    x = np.load(ensemble)
    err = _err(capsys, ["observables", str(_copy(ensemble, tmp_path, "b", info, x[:, :2, :2]))])
    assert "L = 4 but the array has L = 2" in err
    err = _err(capsys, ["observables", str(_copy(ensemble, tmp_path, "c", info | {"chains": 1}, x[:3]))])
    assert "n = 64 but the array has n = 3" in err
    err = _err(capsys, ["observables", str(_copy(ensemble, tmp_path, "d", info | {"chain_index": [0, 1]}))])
    assert "chain_index" in err


@pytest.mark.parametrize("text", ["[1, 2]", '"params"', "3", "null", "[" * 100_000 + "]" * 100_000, "{", ""])
def test_sidecars_that_are_not_an_object(ensemble, tmp_path, capsys, text):
    err = _err(capsys, ["observables", str(_copy(ensemble, tmp_path, "j", text))])
    assert "ensemble parameters" in err or "has no parameters" in err


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-100, 100), st.floats(allow_nan=False),
                                     st.text(max_size=6), st.sampled_from(["phi4", "ising", "model"])),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=8)
claims = st.dictionaries(st.sampled_from(["params", "L", "n", "chains", "chain_index", "model", "kappa"]),
                         json_values, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=claims)
def test_any_sidecar_edit_is_read_or_refused_in_one_line(ensemble, tmp_path_factory, capsys, edit):
    """Any value for any of the keys an ensemble's JSON holds: a table (exit 0) or one line, exit 2."""
    info = json.loads(ensemble.with_suffix(".json").read_text()) | edit
    path = _copy(ensemble, tmp_path_factory.mktemp("edit"), "e", info)
    code = main(["observables", str(path), "--json"])
    out, err = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in err, err
    if code == 0:
        json.loads(out)
    else:
        assert err.startswith("physdiff: error: ") and err.count("\n") == 1, err


# ---------------------------------------------------------------- no density where there is none


def test_discrete_theories_have_no_density(ising_run, tmp_path, capsys):
    from physdiff.errors import PhysdiffError
    from physdiff.run import LoadedRun

    out, q = tmp_path / "s.npy", tmp_path / "q.npy"
    assert "no density on the spins" in _err(capsys, ["sample", str(ising_run), "--n", "4", "--log-prob", str(q),
                                                      "--out", str(out)])
    assert not list(tmp_path.iterdir())  # (--metropolis: exact through the embedding, tests/test_embedding.py)
    with pytest.raises(PhysdiffError, match="no density on the spins"):
        LoadedRun(ising_run).sample(4, 0, log_prob=True)


def test_metropolis_needs_two_states_and_burns_in(phi4_run, tmp_path, capsys):
    out, q = tmp_path / "m.npy", tmp_path / "q.npy"
    assert "needs n >= 2 (--n; got 1)" in _err(capsys, ["sample", str(phi4_run), "--metropolis", "--n", "1",
                                                        "--out", str(out)])
    assert "applies to Metropolis chains only" in _err(capsys, ["sample", str(phi4_run), "--n", "4", "--burn-in", "3",
                                                       "--out", str(out)])
    assert main(["sample", str(phi4_run), "--metropolis", "--n", "12", "--burn-in", "5", "--steps", "3",
                 "--log-prob", str(q), "--out", str(out)]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["burn_in"] == 5 and info["n_proposals"] == 17 and len(info["chain_index"]) == 12
    assert min(info["chain_index"]) >= 0 and np.load(out).shape == (12, 4, 4)
    # the log-densities line up with the chain: proposal chain_index[i] for every row i
    res = __import__("physdiff.run", fromlist=["LoadedRun"]).LoadedRun(phi4_run).sample(
        17, 0, sampler="ode", log_prob=True, steps=3)
    np.testing.assert_array_equal(np.load(q), res.log_prob[info["chain_index"]])
    np.testing.assert_array_equal(np.load(out), res.samples[info["chain_index"], 0])


def test_lattice_default_sampler_is_the_documented_ode(phi4_run):
    from physdiff.run import LoadedRun
    from physdiff.sampling import resolve_sampler

    run = LoadedRun(phi4_run)
    assert run.default_sampler()["sampler"] == "ode" and resolve_sampler(run)["sampler"] == "ode"


# ---------------------------------------------------------------- seeds


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, MAX_SEED), offset=st.integers(0, 10**6), scale=st.sampled_from([1, 1009, 7919]))
def test_derived_seeds_always_seed_a_generator(seed, offset, scale):
    """Seeds derived from any user seed (seed + k, base + 1009·seed) seed torch, unchanged when
    they are inside its range."""
    import torch

    from physdiff import seeding

    derived = 10**15 + scale * seed + offset
    g = seeding.generator(derived)
    assert g.initial_seed() == derived % 2**64
    if derived < 2**64:
        assert g.initial_seed() == torch.Generator().manual_seed(derived).initial_seed()


@pytest.mark.parametrize("seed", ["18300000000000000", str(MAX_SEED)])
def test_commands_at_the_largest_seeds(phi4_run, tmp_path, capsys, seed):
    assert main(["plot", str(phi4_run), "--n", "16", "--seed", seed]) == 0
    assert main(["sample", str(phi4_run), "--n", "4", "--seed", seed, "--metropolis", "--steps", "2",
                 "--out", str(tmp_path / "m.npy")]) == 0
    assert main(["mcmc", "ising", "--L", "4", "--n", "32", "--seed", seed, "--out", str(tmp_path / "i.npy")]) == 0
    capsys.readouterr()


# ---------------------------------------------------------------- outputs


def test_outputs_are_written_together_or_not_at_all(phi4_run, ensemble, tmp_path, capsys, monkeypatch):
    """A failure while writing (a full disk) at any file of a set leaves none of the set and
    no earlier file replaced: mcmc's ensemble and JSON, sample's samples, log q and JSON."""
    from physdiff import checkpoint

    real = checkpoint.npy_writer
    calls = {"n": 0}

    def failing(array, dtype="float32"):
        write = real(array, dtype)

        def fail_second(tmp):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(28, "No space left on device")
            write(tmp)
        return fail_second

    monkeypatch.setattr(checkpoint, "npy_writer", failing)
    old = tmp_path / "s.npy"
    old.write_bytes(b"user samples")
    old.with_suffix(".json").write_text('{"user": "sidecar"}')
    err = _err(capsys, ["sample", str(phi4_run), "--n", "4", "--steps", "2", "--log-prob", str(tmp_path / "q.npy"),
                        "--out", str(old), "--overwrite"])
    assert "No space left" in err
    assert old.read_bytes() == b"user samples" and old.with_suffix(".json").read_text() == '{"user": "sidecar"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.npy"]

    def no_json(data):
        def fail(tmp):
            raise OSError(28, "No space left on device")
        return fail

    from physdiff.lattice import ensemble as ens

    monkeypatch.setattr(ens, "bytes_writer", no_json)
    assert main(["mcmc", "phi4", "--L", "4", "--n", "32", "--out", str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err  # mcmc's progress lines, then the one error line
    assert "Traceback" not in err and err.splitlines()[-1].startswith("physdiff: error: cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.npy"]


def test_one_writer_per_output(tmp_path, capsys):
    from physdiff.checkpoint import OutputLock

    out = tmp_path / "e.npy"
    with OutputLock(tmp_path / "e.json"):  # another process writing this ensemble (its JSON shares the lock)
        err = _err(capsys, ["mcmc", "ising", "--L", "4", "--n", "32", "--out", str(out)])
        assert "being written by another physdiff process" in err
    assert not list(tmp_path.iterdir())  # nothing written, and the lock is gone with its holder
    assert main(["mcmc", "ising", "--L", "4", "--n", "32", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "e.npy", "e.state.safetensors"]


def test_an_ensemble_owns_its_json(ensemble, tmp_path, capsys):
    """NAME.NPY would write NAME.json, the JSON of NAME.npy: only a lower-case .npy is an output."""
    assert "lower case" in _err(capsys, ["mcmc", "phi4", "--L", "4", "--n", "32", "--out", str(tmp_path / "P.NPY")])
    assert "lower case" in _err(capsys, ["sample", "run", "--n", "4", "--out", str(tmp_path / "P.Npy")])


def test_strict_json_everywhere():
    from physdiff.checkpoint import json_text
    from physdiff.stats import gamma_method

    text = json_text({"a": [math.nan, math.inf, np.float32(-np.inf), 1.0], "b": {"c": np.float64(np.nan)}})
    assert json.loads(text) == {"a": [None, None, None, 1.0], "b": {"c": None}}
    x = np.random.default_rng(0).normal(size=500)
    base = gamma_method(x)
    for scale in (1e-200, 1e-30, 1e30, 1e200, 1e300):  # errors of huge and tiny values neither overflow nor vanish
        est = gamma_method(scale * x)
        assert est.error == pytest.approx(scale * base.error, rel=1e-9) and est.tau_int == base.tau_int


def test_huge_values_give_valid_json_or_one_line(ensemble, tmp_path, capsys):
    info = json.loads(ensemble.with_suffix(".json").read_text())
    x = np.load(ensemble).astype(np.float64)
    assert "beyond ±1e+30" in _err(capsys, ["observables", str(_copy(ensemble, tmp_path, "h", info, x * 1e150))])
    assert main(["observables", str(_copy(ensemble, tmp_path, "g", info, x * 1e25)), "--json"]) == 0
    json.loads(capsys.readouterr().out)  # strict JSON: never NaN or Infinity


@pytest.mark.parametrize("content", [b"1 2 3\n", b"\x00\x01garbage", "safetensors", "object"])
def test_files_named_npy_are_never_unpickled(phi4_run, tmp_path, capsys, content):
    path = tmp_path / "x.npy"
    if content == "safetensors":
        path.write_bytes((phi4_run / "ema.safetensors").read_bytes())
    elif content == "object":
        np.save(path, np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    else:
        path.write_bytes(content)
    for argv in (["observables", str(path)], ["train", "--data", str(path), "--out", str(tmp_path / "r")]):
        err = _err(capsys, argv)
        assert "allow_pickle" not in err and "pickle.load" not in err


# ---------------------------------------------------------------- figures and metrics


def test_figures_of_a_few_configurations(phi4_run, ensemble, tmp_path, capsys):
    assert main(["plot", str(phi4_run), "--n", "3"]) == 0
    info = json.loads(ensemble.with_suffix(".json").read_text()) | {"chains": 1, "n": 3}
    path = _copy(ensemble, tmp_path, "three", info, np.load(ensemble)[:3])
    (tmp_path / "figs").mkdir()
    assert main(["observables", str(path), "--plot", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "configurations.png").is_file()


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00binary\n", b"1,2,3,4,5,6,7\n", b"20,abc,1,1,1,1\n"])
def test_a_corrupt_metrics_csv(phi4_run, tmp_path, capsys, garbage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(phi4_run, run)
    with open(run / "metrics.csv", "ab") as fh:
        fh.write(garbage)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # shown as the CLI shows it: one line on stderr
        assert main(["plot", str(run), "--n", "16"]) == 0
    assert "physdiff: warning: " in capsys.readouterr().err and (run / "loss.png").is_file()
    assert main(["train", "--resume", str(run), "--steps", "30"]) == 0
    lines = (run / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("step,loss") and [int(r.split(",")[0]) for r in lines[1:]][-1] == 30


@pytest.mark.parametrize("couplings", [["--kappa", "1e6"], ["--lam", "1e6"]])
def test_stiff_couplings_are_refused_within_seconds(tmp_path, capsys, couplings):
    """Couplings HMC cannot integrate used to hang for minutes: the work is bounded, one line."""
    import time

    t0 = time.perf_counter()
    assert main(["mcmc", "phi4", "--L", "4", "--n", "32", *couplings, "--out", str(tmp_path / "k.npy")]) == 2
    assert "HMC cannot move the chains" in capsys.readouterr().err and time.perf_counter() - t0 < 60
    assert not list(tmp_path.iterdir())


def test_the_planned_work_is_bounded(monkeypatch, capsys, tmp_path):
    from physdiff.lattice import mc

    monkeypatch.setattr(mc, "MAX_SWEEPS", 50)
    err = _err(capsys, ["mcmc", "ising", "--L", "4", "--n", "3200", "--out", str(tmp_path / "i.npy")])
    assert "more than 50" in err

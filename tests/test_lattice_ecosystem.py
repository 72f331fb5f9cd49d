"""The lattice ensembles in the physicist's other tools: the per-configuration primaries exported to
pyerrors (``observables --pyerrors``), HDF5 ensembles (``mcmc --out NAME.h5``), and a Monte Carlo
stream resumed bit for bit (``mcmc --resume``)."""

import sys
import warnings

import numpy as np
import pytest

from conftest import one_line_error
from physdiff.cli import main

_err = one_line_error


@pytest.fixture(scope="module")
def pe():
    with warnings.catch_warnings():  # pyerrors imports scipy.odr, deprecated in SciPy 1.17
        warnings.simplefilter("ignore", DeprecationWarning)
        import pyerrors
        import pyerrors.input.json

    return pyerrors


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    out = tmp_path_factory.mktemp("eco") / "phi4.npy"
    assert main(["mcmc", "phi4", "--L", "4", "--n", "1600", "--chains", "4", "--out", str(out)]) == 0
    return out


# ---------------------------------------------------------------- pyerrors


def _loaded(pe, path):
    data = pe.input.json.load_json(str(path), verbose=False, full_output=True)
    return {o.tag: o for o in data["obsdata"]}, data["description"]


def test_pyerrors_export_loads_back_with_physdiffs_errors(pe, ensemble, tmp_path, capsys):
    """The file holds the per-configuration primaries, chains as replicas NAME|r<k>: pyerrors' values
    are physdiff's; its Γ-method errors agree with physdiff's within a few per cent for ⟨|M|⟩ and
    S/V (same S = 1.5; 4 chains of 400), and to rounding once each chain is centred on the overall mean (pyerrors
    takes each replica's fluctuations about its own mean, physdiff about the overall one:
    stats.gamma_method's docstring); the connected G(r) = g(r) − M² derived in pyerrors is physdiff's."""
    from physdiff.lattice.ensemble import load_ensemble
    from physdiff.lattice.observables import measure, primaries
    from physdiff.lattice.theory import theory_from_params
    from physdiff.stats import gamma_method

    out = tmp_path / "phi4.json.gz"
    assert main(["observables", str(ensemble), "--pyerrors", str(out)]) == 0
    assert "wrote 8 pyerrors Obs" in capsys.readouterr().out
    obs, description = _loaded(pe, out)
    assert list(obs) == ["M", "|M|", "M^2", "M^4", "S/V", "g(0)", "g(1)", "g(2)"]
    assert '"chains": 4' in description and '"kappa": 0.2705' in description
    x, info = load_ensemble(ensemble)
    theory = theory_from_params(info["params"])
    ours = measure(x, theory, chains=4)
    p = primaries(x, theory)
    for tag, key, series in (("|M|", "abs_m", p["abs_m"]), ("S/V", "action_density", p["s"])):
        o = obs[tag]
        assert sorted(o.names) == [f"phi4|r{k}" for k in range(4)]
        chains = series.reshape(4, -1)  # chain-major: chain k is replica r<k>
        np.testing.assert_allclose([o.r_values[f"phi4|r{k}"] for k in range(4)], chains.mean(1), rtol=1e-12)
        o.gamma_method(S=1.5)
        assert o.value == pytest.approx(ours[key].value, rel=1e-12)
        # physdiff's error also holds the spread of the chain means: ≈ (2W + 1)/(2 · 400) relative
        assert o.dvalue == pytest.approx(ours[key].error, rel=0.04)
        centred = chains - chains.mean(1, keepdims=True) + chains.mean()
        assert gamma_method(centred).error == pytest.approx(o.dvalue, rel=1e-10)
    for r in range(3):
        connected = obs[f"g({r})"] - obs["M"] ** 2
        assert connected.value == pytest.approx(ours["G"][r].value, rel=1e-10)


def test_pyerrors_output_rules(pe, ensemble, tmp_path, capsys, monkeypatch):
    """Bad names, a missing folder, an existing file without --overwrite, pyerrors not installed:
    one line each, nothing written."""
    for name in ("p.json", "p.gz", "p.npy", ".json.gz"):
        assert ".json.gz" in _err(capsys, ["observables", str(ensemble), "--pyerrors", str(tmp_path / name)])
    assert "does not exist" in _err(capsys, ["observables", str(ensemble), "--pyerrors",
                                              str(tmp_path / "no" / "p.json.gz")])
    assert not list(tmp_path.iterdir())
    old = tmp_path / "p.json.gz"
    old.write_bytes(b"user data")
    assert "--overwrite" in _err(capsys, ["observables", str(ensemble), "--pyerrors", str(old)])
    assert old.read_bytes() == b"user data"
    assert main(["observables", str(ensemble), "--pyerrors", str(old), "--overwrite", "--json"]) == 0
    assert "wrote 8 pyerrors Obs" in capsys.readouterr().err  # with --json the summary goes to stderr
    assert len(_loaded(pe, old)[0]) == 8
    monkeypatch.setitem(sys.modules, "pyerrors", None)  # import pyerrors now raises ImportError
    err = _err(capsys, ["observables", str(ensemble), "--pyerrors", str(tmp_path / "q.json.gz")])
    assert "pip install pyerrors" in err
    assert not (tmp_path / "q.json.gz").exists()


# ---------------------------------------------------------------- HDF5


SMALL = ["--L", "4", "--chains", "4"]


def _mcmc(model, out, n, *extra):
    couplings = ["--kappa", "0.25", "--lam", "0.022"] if model == "phi4" else ["--beta", "0.4"]
    return main(["mcmc", model, *SMALL, *couplings, "--n", str(n), "--out", str(out), *extra])


def _observables(capsys, path, *extra):
    import json

    capsys.readouterr()
    assert main(["observables", str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_hdf5_ensemble_layout_and_round_trip(tmp_path, capsys):
    """mcmc --out NAME.h5 writes what --out NAME.npy writes (the same configurations, float32) with
    the Monte Carlo time, the chain and every parameter inside; observables (and --compare) read
    it; an .npy ensemble rewritten as .h5 and back gives the same observables."""
    import h5py

    from physdiff.lattice.ensemble import load_ensemble, save_ensemble

    assert _mcmc("phi4", tmp_path / "a.h5", 64) == 0 and _mcmc("phi4", tmp_path / "a.npy", 64) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "a.json", "a.npy", "a.state.safetensors"]
    x, info = load_ensemble(tmp_path / "a.npy")
    with h5py.File(tmp_path / "a.h5", "r") as fh:
        assert fh["configs"].dtype == np.float32 and fh["configs"].shape == (64, 4, 4)
        np.testing.assert_array_equal(fh["configs"][()], np.load(tmp_path / "a.npy"))
        np.testing.assert_array_equal(fh["chain"][()], np.repeat(np.arange(4), 16))
        first = info["burn_in_sweeps"] + info["spacing_sweeps"]
        np.testing.assert_array_equal(fh["mc_time"][:16], first + info["spacing_sweeps"] * np.arange(16))
        attrs = dict(fh.attrs)
    assert attrs["model"] == "phi4" and attrs["kappa"] == 0.25 and attrs["lam"] == 0.022
    for key in ("L", "n", "chains", "seed", "burn_in_sweeps", "spacing_sweeps", "hmc_step"):
        assert attrs[key] == info[key], key
    a, b = _observables(capsys, tmp_path / "a.h5", "--compare", str(tmp_path / "a.npy")), \
        _observables(capsys, tmp_path / "a.npy")
    assert a["observables"] == b["observables"] == a["compare"]["observables"]
    save_ensemble(tmp_path / "c.h5", x, info)  # npy → h5 → npy
    save_ensemble(tmp_path / "d.npy", *load_ensemble(tmp_path / "c.h5"))
    assert _observables(capsys, tmp_path / "d.npy")["observables"] == b["observables"]
    assert _observables(capsys, tmp_path / "c.h5")["observables"] == b["observables"]


def test_hdf5_written_elsewhere(tmp_path, capsys):
    """An HDF5 file from another program: configs and the theory's attributes are enough; a file that
    is not HDF5, or has no configs, is one line."""
    import h5py

    x = np.sign(np.random.default_rng(0).normal(size=(32, 4, 4))).astype(np.float32)
    with h5py.File(tmp_path / "own.h5", "w") as fh:
        fh["configs"] = x
        fh.attrs.update({"model": np.bytes_(b"ising"), "beta": 0.3, "chains": 2})  # a fixed-length string
    result = _observables(capsys, tmp_path / "own.h5")
    assert result["params"] == {"model": "ising", "beta": 0.3} and result["n"] == 32
    assert "holds no Monte Carlo state" in _err(capsys, ["mcmc", "ising", "--L", "4", "--chains", "2", "--beta", "0.3",
                                                         "--n", "64", "--out", str(tmp_path / "own.h5"), "--resume"])
    with h5py.File(tmp_path / "empty.h5", "w") as fh:
        fh.attrs["model"] = "ising"
    assert "no dataset 'configs'" in _err(capsys, ["observables", str(tmp_path / "empty.h5")])
    (tmp_path / "text.h5").write_text("not hdf5")
    assert "not a readable HDF5 file" in _err(capsys, ["observables", str(tmp_path / "text.h5")])
    with h5py.File(tmp_path / "bare.h5", "w") as fh:
        fh["configs"] = x
    assert "has no parameters" in _err(capsys, ["observables", str(tmp_path / "bare.h5")])


def test_hdf5_output_rules(tmp_path, capsys, monkeypatch):
    for name in ("e.H5", "e.hdf5", "e.NPY"):
        assert ".npy or .h5 (lower case)" in _err(capsys, ["mcmc", "ising", *SMALL, "--out", str(tmp_path / name)])
    (tmp_path / "e.h5").write_bytes(b"user data")
    assert "--overwrite" in _err(capsys, ["mcmc", "ising", *SMALL, "--n", "32", "--out", str(tmp_path / "e.h5")])
    assert (tmp_path / "e.h5").read_bytes() == b"user data"
    monkeypatch.setitem(sys.modules, "h5py", None)
    assert "pip install h5py" in _err(capsys, ["observables", str(tmp_path / "e.h5")])
    assert "pip install h5py" in _err(capsys, ["mcmc", "ising", *SMALL, "--n", "32", "--out", str(tmp_path / "f.h5")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.h5"]


# ---------------------------------------------------------------- resume


@pytest.mark.parametrize(("model", "suffix"), [("phi4", ".npy"), ("ising", ".h5")])
def test_resume_extends_the_stream_bit_for_bit(model, suffix, tmp_path, capsys):
    """n1 configurations, then --resume to n1 + n2: exactly the array of one run of n1 + n2 (φ⁴: HMC
    and Wolff, both generators continued; Ising: Wolff), with its JSON's n and Monte Carlo times."""
    from physdiff.lattice.ensemble import load_ensemble

    one, two = tmp_path / f"one{suffix}", tmp_path / f"two{suffix}"
    assert _mcmc(model, one, 48) == 0
    assert _mcmc(model, two, 16) == 0
    assert _mcmc(model, two, 32, "--resume") == 0
    assert f"extended {two}" in (said := capsys.readouterr().out) and "to 32 configurations (4 chains, 16 new)" in said
    assert _mcmc(model, two, 48, "--resume") == 0
    (x1, info1), (x2, info2) = load_ensemble(one), load_ensemble(two)
    np.testing.assert_array_equal(x1, x2)
    assert info2["n"] == 48 and info2["spacing_sweeps"] == info1["spacing_sweeps"]
    if model == "phi4":
        assert info2["hmc_acceptance"] == info1["hmc_acceptance"]
    if suffix == ".h5":
        import h5py

        with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
            for key in ("configs", "mc_time", "chain", "mc_state/x", "mc_state/torch_rng"):
                np.testing.assert_array_equal(a[key][()], b[key][()])


def test_resume_refusals(tmp_path, capsys):
    """A resume whose parameters differ names the difference; no more configurations, no state, a
    state that is not the ensemble's, no ensemble, --overwrite with --resume: one line each, the
    files unchanged."""
    out = tmp_path / "e.npy"
    assert _mcmc("phi4", out, 16) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    base = ["mcmc", "phi4", "--kappa", "0.25", "--lam", "0.022", "--n", "32", "--out", str(out), "--resume"]
    for extra, said in ((["--L", "4", "--chains", "4", "--seed", "1"], "seed = 0, not 1"),
                        (["--L", "4", "--chains", "8"], "chains = 4, not 8"),
                        (["--L", "6", "--chains", "4"], "L = 4, not 6"),
                        (["--L", "4", "--chains", "4", "--no-cluster"], "cluster_updates = True, not False")):
        assert said in _err(capsys, [*base, *extra])
    assert "lam = 0.022, not 0.03" in _err(capsys, [*base[:5], "0.03", *base[6:], *SMALL])
    assert "ask for more" in _err(capsys, [*base[:7], "16", *base[8:], *SMALL])
    assert "give one of them" in _err(capsys, [*base, *SMALL, "--overwrite"])
    assert "does not exist" in _err(capsys, [*base[:9], str(tmp_path / "new.npy"), "--resume", *SMALL])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    other = tmp_path / "other.npy"
    assert _mcmc("phi4", other, 16, "--seed", "5") == 0
    capsys.readouterr()
    (tmp_path / "e.state.safetensors").write_bytes((tmp_path / "other.state.safetensors").read_bytes())
    assert "not that of its last configurations" in _err(capsys, [*base, *SMALL])
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(tmp_path / "other.state.safetensors"), framework="numpy") as fh:
        meta = fh.metadata()
    arrays = load_file(tmp_path / "other.state.safetensors")
    save_file(arrays | {"torch_rng": arrays["torch_rng"][:100]}, tmp_path / "e.state.safetensors", metadata=meta)
    assert "cannot be read" in _err(capsys, [*base, *SMALL])  # a generator state torch refuses
    (tmp_path / "e.state.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    assert "cannot be read" in _err(capsys, [*base, *SMALL])
    (tmp_path / "e.state.safetensors").unlink()
    assert "cannot be resumed" in _err(capsys, [*base, *SMALL])
    assert out.read_bytes() == before["e.npy"] and out.with_suffix(".json").read_bytes() == before["e.json"]


def test_extend_mcmc_in_steps_is_one_run():
    """The library: a stream extended twice (HMC alone, no cluster updates) is one run of the total,
    configurations, acceptance and final state alike."""
    from physdiff.lattice.action import Phi4
    from physdiff.lattice.mc import extend_mcmc, mcmc_stream

    theory = Phi4(0.2, 0.02)
    x, report, state = mcmc_stream(theory, 4, 24, seed=9, chains=4, cluster=False, pilot=40)
    for n in (32, 48):
        x, report, state = extend_mcmc(theory, x, report, state, n)
    y, ref, end = mcmc_stream(theory, 4, 48, seed=9, chains=4, cluster=False, pilot=40)
    np.testing.assert_array_equal(x, y)
    assert report["hmc_acceptance"] == ref["hmc_acceptance"] and report["n"] == 48
    np.testing.assert_array_equal(state["torch_rng"], end["torch_rng"])
    assert state["numpy_rng"] == end["numpy_rng"]

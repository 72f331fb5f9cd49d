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
    assert main(["mcmc", "phi4", "--L", "4", "--n", "1600", "--out", str(out)]) == 0
    return out


# ---------------------------------------------------------------- pyerrors


def _loaded(pe, path):
    data = pe.input.json.load_json(str(path), verbose=False, full_output=True)
    return {o.tag: o for o in data["obsdata"]}, data["description"]


def test_pyerrors_export_loads_back_with_physdiffs_errors(pe, ensemble, tmp_path, capsys):
    """The file holds the per-configuration primaries, chains as replicas NAME|r<k>: pyerrors' values
    are physdiff's; its Γ-method errors agree with physdiff's within a few per cent for ⟨|M|⟩ and
    S/V (same S = 1.5), and to rounding once each chain is centred on the overall mean (pyerrors
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
    assert '"chains": 16' in description and '"kappa": 0.2705' in description
    x, info = load_ensemble(ensemble)
    theory = theory_from_params(info["params"])
    ours = measure(x, theory, chains=16)
    p = primaries(x, theory)
    for tag, key, series in (("|M|", "abs_m", p["abs_m"]), ("S/V", "action_density", p["s"])):
        o = obs[tag]
        assert sorted(o.names) == sorted(f"phi4|r{k}" for k in range(16))  # pyerrors sorts the names
        chains = series.reshape(16, -1)  # chain-major: chain k is replica r<k>
        np.testing.assert_allclose([o.r_values[f"phi4|r{k}"] for k in range(16)], chains.mean(1), rtol=1e-12)
        o.gamma_method(S=1.5)
        assert o.value == pytest.approx(ours[key].value, rel=1e-12)
        assert o.dvalue == pytest.approx(ours[key].error, rel=0.1)  # the spread of 16 chain means
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

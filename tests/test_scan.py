"""`physdiff scan`: the grid syntax, the Binder crossing and its error, the scan's ensembles (made,
reused, extended, never replaced) and its outputs, against the crossing computed by hand."""

import json
import math

import numpy as np
import pytest

from physdiff.cli import main
from physdiff.errors import PhysdiffError
from physdiff.lattice.scan import binder_crossing, crossings, parse_sizes, parse_values


def test_grid_syntax():
    assert parse_values("0.26:0.28:5", "kappa") == [0.26, 0.265, 0.27, 0.275, 0.28]
    assert parse_values("0.3,0.1,0.2", "beta") == [0.1, 0.2, 0.3]
    assert parse_values("0.44", "beta") == [0.44]
    assert parse_sizes("16,8") == [8, 16]
    for text, said in (("0.3:0.2:4", "start < stop"), ("0.2:0.3:1", "count from 2 to 1000"),
                       ("a,b", "is not one value"), ("0.2:0.3", "is not one value"),
                       ("0.1,nan", "not a finite number"), ("0.1,0.1", "repeats")):
        with pytest.raises(PhysdiffError, match=said):
            parse_values(text, "beta")
    for text in ("8,x", "1,8", "8,8"):
        with pytest.raises(PhysdiffError, match="--L"):
            parse_sizes(text)


def test_binder_crossing_of_known_lines_and_its_error():
    """Two straight lines U_a = 0.6 + 2(κ − 0.27), U_b = 0.6 + 5(κ − 0.27) cross at 0.27 exactly
    (linear interpolation is exact for lines); the propagated error equals the closed form and the
    parametric bootstrap agrees with it; no sign change gives a reason, not a number."""
    v = np.linspace(0.26, 0.28, 5)
    e = 0.002
    ua = [{"value": 0.6 + 2 * (x - 0.27), "error": e} for x in v]
    ub = [{"value": 0.6 + 5 * (x - 0.27), "error": e} for x in v]
    c = binder_crossing(v, ua, ub, n_boot=4000, seed=1)
    assert c["value"] == pytest.approx(0.27, abs=1e-12) and c["binder"] == pytest.approx(0.6, abs=1e-12)
    # the crossing sits on the grid point 0.27 (d = 0 there): interval [0.27, 0.275], d_i = 0,
    # d_{i+1} = −3·0.005, so ∂κ*/∂d_i = Δ/|d_{i+1}| = 1/3 and ∂κ*/∂d_{i+1} = 0
    assert c["error"] == pytest.approx(math.sqrt(2) * e / 3, rel=1e-9)
    assert c["bootstrap_error"] == pytest.approx(c["error"], rel=0.25)
    assert c["bootstrap_failures"] == 0.0
    assert c["cubic"] == pytest.approx(0.27, abs=1e-9)  # the cubic through straight lines is the line
    shifted = [{"value": u["value"] + 1.0, "error": e} for u in ub]
    assert binder_crossing(v, ua, shifted)["value"] is None
    # off the grid points: the root of the interpolant, and the derivative formula
    v2 = np.array([0.0, 1.0])
    c2 = binder_crossing(v2, [{"value": 0.3, "error": 0.01}, {"value": 0.5, "error": 0.01}],
                         [{"value": 0.2, "error": 0.0}, {"value": 0.9, "error": 0.0}], n_boot=10)
    d0, d1 = 0.1, -0.4
    assert c2["value"] == pytest.approx(d0 / (d0 - d1))
    assert c2["error"] == pytest.approx(math.hypot(-d1 / (d0 - d1) ** 2 * 0.01, d0 / (d0 - d1) ** 2 * 0.01))
    assert c2["cubic"] is None  # two points: no polynomial beyond the line
    # curved data: the cubic finds the true root of a cubic d exactly, the line does not
    v3 = np.linspace(0.0, 1.0, 6)
    true = 0.47
    d3 = (v3 - true) * (1 + 3 * v3**2)
    c3 = binder_crossing(v3, [{"value": x, "error": 0.01} for x in d3], [{"value": 0.0, "error": 0.0}] * 6,
                         n_boot=10)
    assert c3["cubic"] == pytest.approx(true, abs=1e-9) and abs(c3["value"] - true) > 1e-3
    assert crossings(np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 1.0])) == [(0.5, 0), (1.5, 1)]
    # curves that touch (a zero between equal signs) or coincide do not cross
    assert crossings(np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.0, 1.0])) == []
    assert crossings(np.array([0.0, 1.0, 2.0]), np.zeros(3)) == []
    same = [{"value": 2 / 3, "error": 0.0}] * 3
    assert binder_crossing([1.5, 2.0, 2.5], same, same)["value"] is None
    # several sign changes: the steepest interval is taken, the others listed
    v4 = np.array([0.0, 1.0, 2.0, 3.0])
    c4 = binder_crossing(v4, [{"value": x, "error": 0.01} for x in (0.1, -0.1, 1.0, -1.0)],
                         [{"value": 0.0, "error": 0.0}] * 4, n_boot=10)
    assert len(c4["roots"]) == 3 and c4["value"] == pytest.approx(2.5) and c4["interval"] == [2.0, 3.0]


def _scan(tmp_path, *extra, n="192"):
    return main(["scan", "ising", "--L", "4,6", "--beta", "0.36:0.52:5", "--n", n, "--chains", "4",
                 "--out", str(tmp_path / "scan"), "-q", *extra])


def test_scan_outputs_and_the_crossing_by_hand(tmp_path, capsys):
    """The scan's JSON, CSV and figures; each point's observables are those of its ensemble file;
    the crossing is that of U_L computed by hand from the ensembles; Onsager's β_c is reported."""
    from physdiff.lattice.ensemble import load_ensemble

    assert _scan(tmp_path) == 0
    said = capsys.readouterr().out
    out = tmp_path / "scan"
    res = json.loads((out / "scan.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["ensembles", "scan.csv", "scan.json", "scan_binder.csv",
                                                     "scan_binder.png", "scan_observables.csv", "scan_observables.png"]
    assert len(res["points"]) == 10 and {p["status"] for p in res["points"]} == {"made"}
    assert len({p["seed"] for p in res["points"]}) == 10  # independent points
    from physdiff.lattice.scan import point_seed

    assert all(p["seed"] == point_seed(0, p["L"], p["params"]) for p in res["points"])
    u = {}
    for p in res["points"]:
        x, info = load_ensemble(out / p["ensemble"])
        assert info["params"]["beta"] == p["beta"] and x.shape == (192, p["L"], p["L"])
        m = x.reshape(len(x), -1).mean(1).astype(np.float64)
        by_hand = 1 - np.mean(m**4) / (3 * np.mean(m**2) ** 2)
        assert p["observables"]["binder"]["value"] == pytest.approx(by_hand, rel=1e-9)
        u.setdefault(p["L"], []).append(by_hand)
    beta = np.array(res["values"])
    d = np.array(u[4]) - np.array(u[6])
    i = next(k for k in range(len(d) - 1) if d[k] * d[k + 1] <= 0)
    by_hand = beta[i] + (beta[i + 1] - beta[i]) * d[i] / (d[i] - d[i + 1])
    (c,) = res["binder_crossings"]
    assert c["L"] == [4, 6] and c["value"] == pytest.approx(by_hand, rel=1e-9) and c["error"] > 0
    assert abs(c["value"] - 0.4407) < 4 * c["error"] + 0.03  # small L: corrections to scaling
    assert res["critical"]["value"] == pytest.approx(0.5 * math.log(1 + math.sqrt(2)))
    rows = (out / "scan.csv").read_text().splitlines()
    assert rows[0].startswith("L,beta,n,observable,value,error") and len(rows) == 1 + 10 * 8
    assert "Binder crossing L = 4/6: β = " in said


def test_scan_reuses_extends_and_never_replaces_ensembles(tmp_path, capsys):
    """A second scan into the folder reads its ensembles (same numbers); a larger --n extends them
    bit for bit (as one longer run); one made otherwise (other chains) is refused, files untouched;
    input errors are one line each."""
    from physdiff.lattice.ensemble import load_ensemble

    assert _scan(tmp_path) == 0
    out = tmp_path / "scan"
    first = json.loads((out / "scan.json").read_text())
    assert _scan(tmp_path) == 0
    again = json.loads((out / "scan.json").read_text())
    assert {p["status"] for p in again["points"]} == {"reused"}
    assert [p["observables"] for p in again["points"]] == [p["observables"] for p in first["points"]]
    taus = [load_ensemble(out / p["ensemble"])[1]["pilot_tau_int_abs_m_sweeps"] for p in first["points"]]
    assert min(taus) < 1  # an integrated autocorrelation time below one sweep extends too (it was refused)
    assert _scan(tmp_path, n="256") == 0
    longer = json.loads((out / "scan.json").read_text())
    assert {p["status"] for p in longer["points"]} == {"extended"} and {p["n"] for p in longer["points"]} == {256}
    p0 = longer["points"][0]
    assert main(["mcmc", "ising", "--L", "4", "--beta", str(p0["beta"]), "--chains", "4", "--n", "256",
                 "--seed", str(p0["seed"]), "--out", str(tmp_path / "one.npy"), "-q"]) == 0
    np.testing.assert_array_equal(load_ensemble(out / p0["ensemble"])[0], load_ensemble(tmp_path / "one.npy")[0])
    capsys.readouterr()
    ens = {p.name: p.read_bytes() for p in (out / "ensembles").iterdir()}
    assert main(["scan", "ising", "--L", "4,6", "--beta", "0.36:0.52:5", "--n", "192", "--chains", "8",
                 "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "made with chains = 4, not 8" in err
    assert {p.name: p.read_bytes() for p in (out / "ensembles").iterdir()} == ens
    # a finer grid in the same folder: the old points are reused (their seeds do not depend on the grid)
    assert main(["scan", "ising", "--L", "4", "--beta", "0.36:0.52:9", "--n", "256", "--chains", "4",
                 "--out", str(out), "-q"]) == 0
    finer = json.loads((out / "scan.json").read_text())
    status = {p["beta"]: p["status"] for p in finer["points"]}
    assert [status[b] for b in (0.36, 0.4, 0.44, 0.48, 0.52)] == ["reused"] * 5
    assert [status[b] for b in (0.38, 0.42, 0.46, 0.5)] == ["made"] * 4
    assert finer["binder_crossings"] == []  # one size
    # outputs no scan wrote are replaced only with --overwrite, checked before any Monte Carlo
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "scan.csv").write_text("my own table")
    capsys.readouterr()
    assert main(["scan", "ising", "--L", "4", "--beta", "0.4,0.5", "--n", "64", "--chains", "4", "--out", str(mine),
                 "-q"]) == 2
    assert "was not written by physdiff scan (or was changed since); pass overwrite=True" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["scan.csv"] and (mine / "scan.csv").read_text() == "my own table"
    for args, said in ((["--beta", "0.4"], "exactly one parameter"), (["--beta", "0.4:0.5:3", "--kappa", "0.2"],
                                                                       "kappa (--kappa) is not a parameter of ising"),
                       (["--beta", "0.4:0.5:3", "--n", "4"], "fewer than 2 per chain"),
                       (["--beta", "0.4:0.5:100000000"], "a count from 2 to 1000")):
        assert main(["scan", "ising", "--L", "4", "--chains", "4", "--out", str(tmp_path / "x"), *args]) == 2
        e = capsys.readouterr().err
        assert e.count("\n") == 1 and said in e, e
    assert not (tmp_path / "x").exists()
    # a coupling the theory refuses, anywhere in the grid, is named before any Monte Carlo runs
    assert main(["scan", "phi4", "--L", "4", "--chains", "4", "--lam", "-1", "--kappa", "0.2:0.3:3",
                 "--out", str(tmp_path / "y"), "-q"]) == 2
    assert "lam" in capsys.readouterr().err and not (tmp_path / "y" / "ensembles").exists()
    # a size beyond any machine (mcmc and train share the bound): one line, no folder made
    for cmd in (["scan", "ising", "--L", "4,99999999999", "--beta", "0.4,0.5", "--out", str(tmp_path / "z")],
                ["mcmc", "ising", "--L", "99999999999", "--beta", "0.4", "--out", str(tmp_path / "z.npy")]):
        assert main([*cmd, "-q"]) == 2
        e = capsys.readouterr().err
        assert e.count("\n") == 1 and "2 <= L <= 1024" in e
    assert not (tmp_path / "z").exists() and not (tmp_path / "z.npy").exists()

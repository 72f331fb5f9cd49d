"""Figures for a paper: bins on a discrete theory's levels, Poisson bands and ratio panels, the
correlator figure, the numbers behind each figure as CSV, --format png|pdf|svg, and titles that
do not overlap."""

import csv
import io

import numpy as np
import pytest

from physdiff.cli import main
from physdiff.plots import figure_table, histogram_edges, plot_correlator, plot_lattice_histograms


def _spins(n, L, seed=0, p_up=0.7):
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, L, L)) < p_up, 1.0, -1.0)


def test_discrete_bins_are_centred_on_the_levels():
    """M of L×L spins takes the values (V − 2k)/V and E/V a lattice of spacing 4/V: every value
    sits at a bin centre and each bin holds one level; a continuous field gets equal bins."""
    import torch

    from physdiff.lattice.action import Ising

    L, V = 4, 16
    x = _spins(4000, L)
    m = x.reshape(len(x), -1).mean(1)
    edges = histogram_edges(m, discrete=True)
    np.testing.assert_allclose(np.diff(edges), 2 / V)
    centres = 0.5 * (edges[1:] + edges[:-1])
    assert np.abs(m[:, None] - centres[None]).min(1).max() < 1e-9
    e = Ising(beta=0.3).density(torch.from_numpy(x)).numpy()
    edges = histogram_edges(e, discrete=True)
    np.testing.assert_allclose(np.diff(edges), 4 / V)  # levels −2 + 4k/V (only even numbers of broken bonds)
    centres = 0.5 * (edges[1:] + edges[:-1])
    assert np.abs(e[:, None] - centres[None]).min(1).max() < 1e-9
    # a 64×64 lattice has 4097 levels of M: merged, a whole number of levels per bin, still centred
    m_big = np.random.default_rng(1).integers(0, 4097, 5000)
    edges = histogram_edges((4096 - 2 * m_big) / 4096, discrete=True)
    assert len(edges) - 1 <= 120 and np.allclose(np.diff(edges), np.diff(edges)[0])
    assert np.isclose(np.diff(edges)[0] / (2 / 4096), round(np.diff(edges)[0] / (2 / 4096)))
    cont = histogram_edges(np.random.default_rng(0).normal(size=1000), discrete=False, bins=40)
    assert len(cont) == 41 and np.allclose(np.diff(cont), np.diff(cont)[0])


def test_histograms_have_poisson_bands_and_a_ratio_panel():
    from physdiff.lattice.action import Ising
    from physdiff.lattice.observables import primaries

    theory = Ising(beta=0.3)
    sets = {"reference": primaries(_spins(3000, 4, 0), theory), "model": primaries(_spins(1000, 4, 1), theory)}
    fig = plot_lattice_histograms(sets, theory.density_label, "t", discrete=True, reference="reference",
                                  tau={"reference": {"m": 2.0, "s": 0.5}}, z={"m": 0.3, "s": -1.2})
    rows = figure_table(fig)
    for r in rows:  # ±√count per bin, scaled like the density
        width = r["bin_hi"] - r["bin_lo"]
        n = 3000 if r["series"] == "reference" else 1000
        assert np.isclose(r["density"], r["count"] / (n * width))
        assert np.isclose(r["error"], np.sqrt(r["count"]) / (n * width))
    for panel in ("m", "s"):
        for series in sets:
            d = [(r["density"], r["bin_hi"] - r["bin_lo"]) for r in rows
                 if (r["panel"], r["series"]) == (panel, series)]
            assert np.isclose(sum(a * b for a, b in d), 1.0)  # a normalised density
    assert len(fig.axes) == 4
    hist_m, _, ratio_m, ratio_s = fig.axes
    labels = [t.get_text() for t in hist_m.get_legend().get_texts()]
    assert "reference (n = 3000, ESS ≈ 750)" in labels and "model (n = 1000)" in labels
    assert "+0.3" in ratio_m.get_title() and "-1.2" in ratio_s.get_title()
    for ax in (ratio_m, ratio_s):
        assert any(np.allclose(line.get_ydata(), 1.0) for line in ax.lines)  # the line at 1
        assert ax.get_xlabel() and "ratio" in ax.get_ylabel()
    # the ratio points are model/reference where the reference has counts
    ref = {r["centre"]: r for r in rows if (r["panel"], r["series"]) == ("m", "reference")}
    mod = {r["centre"]: r for r in rows if (r["panel"], r["series"]) == ("m", "model")}
    pts = ratio_m.lines[0].get_xydata()
    for c, value in pts:
        key = min(ref, key=lambda k: abs(k - c))
        assert np.isclose(value, mod[key]["density"] / ref[key]["density"])
    one = plot_lattice_histograms({"only": sets["model"]}, "s", tau={"only": "independent"})
    assert len(one.axes) == 2  # nothing to divide by: no ratio panel
    assert one.axes[0].get_legend().get_texts()[0].get_text() == "only (n = 1000, independent)"


def test_correlator_figure_labels_and_table():
    g = [{"value": 1.0 / (r + 1), "error": 0.01} for r in range(5)]
    ts = {"C": [{"value": np.cosh(0.5 * (t - 4)), "error": 0.01} for t in range(5)],
          "m_eff": [{"value": 0.5, "error": 0.02} for _ in range(4)], "subtract": "abs_m"}
    fig = plot_correlator({"a": g}, "title", timeslice={"a": ts}, xi2={"a": {"value": 3.0, "error": 0.1}},
                          n={"a": 100}, L=8)
    left, mid, right = fig.axes
    assert "not connected" in left.get_title() and "connected" not in left.get_ylabel()
    assert "|M|" in mid.get_ylabel() and "eff" in right.get_ylabel() and "finite-volume" in right.get_title()
    assert "n = 100" in left.get_legend().get_texts()[0].get_text()
    rows = figure_table(fig)
    assert {r["quantity"] for r in rows} == {"G", "C", "m_eff"}
    assert [r["r"] for r in rows if r["quantity"] == "m_eff"] == [1, 2, 3, 4]


def _overlaps(fig) -> list[str]:
    """Texts that overlap the suptitle: axes titles, after a draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    sup = fig._suptitle.get_window_extent(renderer)
    return [ax.get_title() for ax in fig.axes if ax.get_title() and ax.title.get_window_extent(renderer).overlaps(sup)]


def test_no_title_overlaps_the_suptitle():
    from physdiff.lattice.action import Phi4
    from physdiff.lattice.observables import primaries

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4, 4))
    theory = Phi4()
    figs = [plot_lattice_histograms({"a": primaries(x, theory), "b": primaries(x[::-1].copy(), theory)}, "s", "title"),
            plot_correlator({"a": [{"value": 1.0, "error": 0.1}] * 3}, "title",
                            timeslice={"a": {"C": [{"value": 1.0, "error": 0.1}] * 3,
                                             "m_eff": [{"value": 1.0, "error": 0.1}] * 2}})]
    for fig in figs:
        assert not _overlaps(fig)


@pytest.fixture(scope="module")
def ensembles(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    for name, seed in (("a", 0), ("b", 1)):
        assert main(["mcmc", "ising", "--L", "4", "--beta", "0.3", "--n", "64", "--seed", str(seed),
                     "--out", str(d / f"{name}.npy")]) == 0
    return d


@pytest.mark.parametrize(("fmt", "magic"), [("pdf", b"%PDF"), ("svg", b"<?xml"), ("png", b"\x89PNG")])
def test_observables_plot_format_and_csv(ensembles, tmp_path, capsys, fmt, magic):
    out = tmp_path / "figs"
    out.mkdir()
    assert main(["observables", str(ensembles / "a.npy"), "--compare", str(ensembles / "b.npy"), "--plot", str(out),
                 "--format", fmt]) == 0
    for stem in ("histograms", "correlator", "configurations"):
        assert (out / f"{stem}.{fmt}").read_bytes()[:len(magic)] == magic
    assert {p.suffix for p in out.iterdir()} == {f".{fmt}", ".csv"}
    hist = list(csv.DictReader(io.StringIO((out / "histograms.csv").read_text())))
    assert {"panel", "series", "bin_lo", "bin_hi", "centre", "count", "density", "error"} <= set(hist[0])
    assert {r["series"] for r in hist} == {"a", "b"}
    corr = list(csv.DictReader(io.StringIO((out / "correlator.csv").read_text())))
    assert {r["quantity"] for r in corr} == {"G", "C", "m_eff"} and {"r", "value", "error"} <= set(corr[0])
    assert not (out / "configurations.csv").exists()
    capsys.readouterr()
    # outputs are never replaced without --overwrite, the CSVs included
    (out / f"histograms.{fmt}").unlink()
    from conftest import one_line_error

    err = one_line_error(capsys, ["observables", str(ensembles / "a.npy"), "--plot", str(out), "--format", fmt])
    assert "overwrite" in err
    assert not (out / f"histograms.{fmt}").exists()


def test_bad_format_is_one_line(ensembles, tmp_path, capsys):
    from conftest import one_line_error
    from physdiff.arguments import FIGURE_FORMATS
    from physdiff.checkpoint import FIGURE_FORMATS as WRITTEN

    assert FIGURE_FORMATS == WRITTEN
    err = one_line_error(capsys, ["observables", str(ensembles / "a.npy"), "--plot", str(tmp_path), "--format", "jpg"])
    assert "'jpg'" in err and "png" in err and "pdf" in err and "svg" in err
    assert not list(tmp_path.iterdir())
    err = one_line_error(capsys, ["plot", str(tmp_path / "no-run"), "--format", "tiff"])
    assert "'tiff'" in err


def test_plot_command_writes_pdf(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "gaussian", "--out", str(run), "--steps", "30", "--width", "16", "--depth",
                 "1", "--timesteps", "20", "--batch-size", "64", "--n-train", "500", "--device", "cpu",
                 "--no-progress"]) == 0
    assert main(["plot", str(run), "--n", "100", "--format", "pdf"]) == 0
    for name in ("samples", "forward", "reverse", "loss"):
        assert (run / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
        assert not (run / f"{name}.png").exists()
    samples = list(csv.DictReader(io.StringIO((run / "samples.csv").read_text())))
    assert sum(r["series"] == "model samples" for r in samples) == 100 and set(samples[0]) == {"series", "x1", "x2"}
    loss = list(csv.DictReader(io.StringIO((run / "loss.csv").read_text())))
    assert [int(r["step"]) for r in loss][-1] == 30 and float(loss[-1]["loss"]) > 0

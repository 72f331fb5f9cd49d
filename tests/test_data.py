import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from physdiff.data import TOY_DATASETS, Normalizer, get_toy, load_array, resolve_toy
from physdiff.errors import PhysdiffError


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_shapes_and_seeds(name):
    toy = get_toy(name)
    a, b, c = toy.sample(500, 1), toy.sample(500, 1), toy.sample(500, 2)
    assert a.shape == (500, 2) and a.dtype == np.float64 and np.isfinite(a).all()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_gaussian_log_prob_matches_scipy():
    toy = get_toy("gaussian")
    x = toy.sample(100, 0)
    ref = multivariate_normal([1.0, -0.5], [[1.0, 0.6], [0.6, 0.5]]).logpdf(x)
    np.testing.assert_allclose(toy.log_prob(x), ref, rtol=1e-10)


@pytest.mark.parametrize("name", ["two_gaussians", "eight_gaussians", "checkerboard", "gaussian"])
def test_exact_densities_integrate_to_one(name):
    toy = get_toy(name)
    g = np.linspace(-6, 6, 601)
    xx, yy = np.meshgrid(g, g)
    lp = toy.log_prob(np.stack([xx.ravel(), yy.ravel()], 1))
    assert np.exp(lp).sum() * (g[1] - g[0]) ** 2 == pytest.approx(1.0, abs=0.02)
    assert np.isfinite(toy.log_prob(toy.sample(1000, 3))).all()  # samples lie in the support


def test_mixture_moments_match_samples():
    toy = get_toy("two_gaussians")
    x = toy.sample(200_000, 0)
    np.testing.assert_allclose(x.mean(0), toy.mixture.mean().numpy(), atol=0.02)
    np.testing.assert_allclose(np.cov(x, rowvar=False), toy.mixture.covariance().numpy(), atol=0.03)


def test_unknown_dataset_suggests():
    with pytest.raises(PhysdiffError, match="did you mean 'moons'"):
        resolve_toy("mons")


def test_load_array_good_files(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 3))
    np.save(tmp_path / "a.npy", x)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy"), x)
    np.savetxt(tmp_path / "a.csv", x, delimiter=",", header="u,v,w", comments="")
    np.testing.assert_allclose(load_array(tmp_path / "a.csv"), x)
    np.savetxt(tmp_path / "b.csv", x, delimiter=",")
    np.testing.assert_allclose(load_array(tmp_path / "b.csv"), x)


@pytest.mark.parametrize("first", ["1,2,3", "1e3, -2 ,nan", "x , y , z", "mixed,2,3", "0.5,abc,1"])
def test_csv_first_line_is_never_guessed(tmp_path, first):
    """All numbers: data (never dropped as a header); no numbers: a header of names; a mix: refused."""
    rows = np.random.default_rng(1).normal(size=(20, 3))
    path = tmp_path / "f.csv"
    path.write_text(first + "\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
    fields = [f.strip() for f in first.split(",")]
    kinds = {f.lstrip("-").replace(".", "", 1).replace("e", "", 1).isdigit() or f == "nan" for f in fields}
    if kinds == {True}:
        got = load_array(path) if "nan" not in first else None
        if got is not None:
            assert got.shape == (21, 3)
        else:
            with pytest.raises(PhysdiffError, match="NaN/inf"):
                load_array(path)
    elif kinds == {False}:
        np.testing.assert_allclose(load_array(path), rows, atol=1e-6)
    else:
        with pytest.raises(PhysdiffError, match="line 1 mixes numbers and text"):
            load_array(path)


@pytest.mark.parametrize("content,match", [
    (np.full((40, 2), np.nan), "NaN/inf"),
    (np.ones((40,)), "expected \\(N, D\\)"),
    (np.ones((3, 2)), "at least 16 rows"),
    (np.array([["a", "b"]] * 20), "numeric"),
])
def test_load_array_rejects_bad_content(tmp_path, content, match):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(PhysdiffError, match=match):
        load_array(tmp_path / "bad.npy")


def test_load_array_rejects_bad_files(tmp_path):
    with pytest.raises(PhysdiffError, match="does not exist"):
        load_array(tmp_path / "missing.npy")
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(PhysdiffError, match="unsupported extension"):
        load_array(tmp_path / "x.txt")
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(PhysdiffError, match=r"corrupt \.npy header"):
        load_array(tmp_path / "corrupt.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(PhysdiffError, match="never unpickles") as exc:
        load_array(tmp_path / "obj.npy")  # pickled objects are refused, never unpickled
    assert "allow_pickle" not in str(exc.value)
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(PhysdiffError):
        load_array(tmp_path / "ragged.csv")


def test_normalizer_roundtrip_and_jacobian():
    x = np.random.default_rng(0).normal(loc=[3, -1], scale=[2, 0.5], size=(1000, 2))
    norm = Normalizer.standardize(x)
    z = norm.encode(torch.from_numpy(x))
    np.testing.assert_allclose(z.mean(0).numpy(), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0).numpy(), 1, atol=1e-12)
    torch.testing.assert_close(norm.decode(z), torch.from_numpy(x))
    assert norm.log_abs_det_jacobian(x.shape[1:]) == pytest.approx(-np.log(x.std(0, ddof=1)).sum())
    again = Normalizer.from_state(norm.state())
    torch.testing.assert_close(again.scale, norm.scale)

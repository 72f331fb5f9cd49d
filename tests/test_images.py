"""Image data, the U-Net, classifier-free guidance and the image metrics."""

import gzip
import struct

import numpy as np
import pytest
import torch

from physdiff.data.images import (
    download_idx,
    load_digits,
    load_idx_dataset,
    load_png_folder,
    read_idx,
    save_png_grid,
)
from physdiff.errors import PhysdiffError
from physdiff.metrics import frechet_distance, memorisation, precision_recall
from physdiff.nets.unet import UNet
from physdiff.samplers import CountingModel, GuidedModel

# ---------------------------------------------------------------- IDX files


def write_idx(path, array: np.ndarray, *, gz=False):
    """The IDX format: 0x0000, type byte (0x08 = uint8), ndim, big-endian int32 dims, data."""
    raw = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_idx_folder(folder, n_train=20, n_test=10, size=28, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    for stem, a in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), a, gz=gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    a = np.random.default_rng(1).integers(0, 256, (5, 3, 4))
    write_idx(tmp_path / "x", a, gz=gz)
    out = read_idx(tmp_path / "x")
    assert out.shape == (5, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, a)


def test_read_idx_refuses_bad_files(tmp_path):
    write_idx(tmp_path / "ok", np.zeros((4, 2, 2)))
    raw = (tmp_path / "ok").read_bytes()
    (tmp_path / "trunc").write_bytes(raw[:-3])
    (tmp_path / "magic").write_bytes(b"\x01\x02" + raw[2:])
    (tmp_path / "gzbad").write_bytes(b"\x1f\x8b" + b"garbage")
    for name, words in (("trunc", "truncated"), ("magic", "not an IDX"), ("gzbad", "could not be read"),
                        ("missing", "could not be read")):
        with pytest.raises(PhysdiffError, match=words):
            read_idx(tmp_path / name)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dataset(tmp_path, gz):
    arrays = make_idx_folder(tmp_path / "mnist", gz=gz)
    data = load_idx_dataset("fashion-mnist", tmp_path / "mnist")
    assert data.train_x.shape == (20, 1, 28, 28) and data.test_x.shape == (10, 1, 28, 28)
    np.testing.assert_allclose(data.train_x[:, 0] * 255, arrays["train-images-idx3-ubyte"], atol=1e-4)
    assert 0 <= data.train_x.min() and data.train_x.max() <= 1
    np.testing.assert_array_equal(data.test_y, np.arange(10))
    assert data.class_names[9] == "Ankle boot"
    (tmp_path / "mnist" / ("t10k-labels-idx1-ubyte" + (".gz" if gz else ""))).unlink()
    with pytest.raises(PhysdiffError, match="lacks t10k-labels-idx1-ubyte"):
        load_idx_dataset("mnist", tmp_path / "mnist")


def test_idx_labels_must_match_images(tmp_path):
    make_idx_folder(tmp_path / "m")
    write_idx(tmp_path / "m" / "train-labels-idx1-ubyte", np.arange(7) % 10)
    with pytest.raises(PhysdiffError, match="disagree"):
        load_idx_dataset("mnist", tmp_path / "m")


def test_download_uses_the_given_mirror(tmp_path):
    """The real download code, pointed at a local mirror (file:// URL) of gzip IDX files."""
    make_idx_folder(tmp_path / "mirror", gz=True)
    download_idx("mnist", tmp_path / "data", base_url=(tmp_path / "mirror").as_uri() + "/")
    data = load_idx_dataset("mnist", tmp_path / "data")
    assert data.train_x.shape == (20, 1, 28, 28)
    with pytest.raises(PhysdiffError, match="could not download"):
        download_idx("mnist", tmp_path / "other", base_url=(tmp_path / "nowhere").as_uri() + "/")
    assert not list((tmp_path / "other").glob("*.gz"))  # nothing half-written


def test_png_folder(tmp_path):
    from matplotlib.image import imsave

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(10):
            imsave(tmp_path / "img" / cls / f"{i}.png", rng.random((6, 5)), cmap="gray", vmin=0, vmax=1)
    data = load_png_folder(tmp_path / "img")
    assert data.class_names == ("cat", "dog") and data.shape == (1, 6, 5)
    assert len(data.train_x) == 18 and len(data.test_x) == 2
    assert sorted(np.bincount(np.concatenate([data.train_y, data.test_y]))) == [10, 10]
    imsave(tmp_path / "img" / "dog" / "odd.png", rng.random((7, 5)), cmap="gray")
    with pytest.raises(PhysdiffError, match="one size"):
        load_png_folder(tmp_path / "img")
    (tmp_path / "img" / "dog" / "bad.png").write_bytes(b"not a png")
    (tmp_path / "img" / "dog" / "odd.png").unlink()
    with pytest.raises(PhysdiffError, match="could not be read as PNG"):
        load_png_folder(tmp_path / "img")
    (tmp_path / "img" / "dog" / "bad.png").unlink()
    (tmp_path / "img" / "empty").mkdir()  # an empty class folder is refused, never silently a class
    with pytest.raises(PhysdiffError, match="holds no PNG image; every subfolder"):
        load_png_folder(tmp_path / "img")


def test_digits_split_is_fixed_and_stratified():
    a, b = load_digits(), load_digits()
    np.testing.assert_array_equal(a.test_x, b.test_x)
    assert a.train_x.shape == (1438, 1, 8, 8) and a.test_x.shape == (359, 1, 8, 8)
    assert a.train_x.min() == 0 and a.train_x.max() == 1
    assert np.all(np.abs(np.bincount(a.test_y) - 36) <= 1)
    # no image is in both splits
    tr = {x.tobytes() for x in a.train_x}
    assert sum(x.tobytes() in tr for x in a.test_x) <= 2  # sklearn's set has a few exact duplicates


def test_png_grid(tmp_path):
    save_png_grid(np.random.default_rng(0).random((10, 1, 8, 8)), tmp_path / "g.png", nrow=5)
    from matplotlib.image import imread

    img = imread(tmp_path / "g.png")
    assert img.shape[:2] == ((2 * 9 + 1) * 4, (5 * 9 + 1) * 4)


# ---------------------------------------------------------------- U-Net


@pytest.mark.parametrize("shape,mult", [((1, 8, 8), (1, 2)), ((1, 28, 28), (1, 2, 2)), ((3, 7, 9), (1, 2))])
def test_unet_shapes_and_zero_start(shape, mult):
    net = UNet(shape[0], channels=8, channel_mult=mult, num_classes=10)
    x = torch.randn(3, *shape)
    out = net(x, torch.tensor([0, 5, 999]), torch.tensor([1, 2, 10]))
    assert out.shape == x.shape and torch.all(out == 0)  # zero output layer at init
    torch.nn.init.normal_(net.out.weight)
    assert net(x, torch.tensor([0, 5, 999])).abs().sum() > 0


def _randomise(net):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net


def test_unet_circular_padding_is_shift_equivariant():
    """Periodic lattice: with circular padding, shifting the input by a multiple of
    2^(levels-1) sites shifts the output alike; zero padding breaks this at the border."""
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 400])
    for padding, equivariant in (("circular", True), ("zeros", False)):
        net = _randomise(UNet(1, 8, (1, 2), padding=padding)).eval()
        out = net(x, t)
        shifted = net(torch.roll(x, (2, -4), dims=(2, 3)), t)
        close = torch.allclose(shifted, torch.roll(out, (2, -4), dims=(2, 3)), atol=1e-4)
        assert close == equivariant


def test_unet_label_changes_output_and_null_token():
    net = _randomise(UNet(1, 8, (1, 2), num_classes=3)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 10])
    a, b = net(x, t, torch.tensor([0, 0])), net(x, t, torch.tensor([1, 1]))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(net(x, t, None), net(x, t, torch.tensor([3, 3])))


# ---------------------------------------------------------------- guidance


class _Toy(torch.nn.Module):
    """f(x, t, c) = x · (c + 1) (c = 3 is the null token → 4x): a model whose guided output is known."""

    def forward(self, x, t, cond=None):
        c = torch.full((len(x),), 3) if cond is None else cond
        return x * (c + 1).view(-1, *[1] * (x.dim() - 1))


@pytest.mark.parametrize("w", [0.0, 0.5, 2.0])
def test_guidance_formula(w):
    x, t, c = torch.randn(4, 2), torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 1])
    guided = CountingModel(GuidedModel(_Toy(), w, null_label=3))
    out = guided(x, t, c)
    expected = (1 + w) * x * (c + 1)[:, None] - w * 4 * x  # (1 + w) f(x, c) − w f(x, ∅)
    torch.testing.assert_close(out, expected)
    assert guided.nfe == 1
    torch.testing.assert_close(guided(x, t, None), 4 * x)  # no label: unguided


# ---------------------------------------------------------------- metrics


def test_frechet_distance_matches_the_closed_form():
    """For large samples of two Gaussians FD → ‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½); here Σ
    diagonal, so the trace term is Σ (σ₁ − σ₂)²."""
    rng = np.random.default_rng(0)
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([1.5, 1.0, 0.5])
    mu2 = np.array([0.3, 0.0, -0.4])
    a = rng.normal(size=(200_000, 3)) * s1
    b = rng.normal(size=(200_000, 3)) * s2 + mu2
    exact = (mu2 ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert abs(frechet_distance(a, b) - exact) < 0.02
    assert abs(frechet_distance(a, a)) < 1e-8


def test_frechet_distance_with_non_commuting_covariances():
    """Σ₁Σ₂ ≠ Σ₂Σ₁: the trace of (Σ₁Σ₂)^½ must be that of the true matrix square root
    (scipy.linalg.sqrtm), not Σ √(λ₁λ₂) or Tr(Σ₁^½ Σ₂^½)."""
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    th = np.pi / 3  # the same ellipse, rotated by 60°
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    c2 = np.diag([4.0, 0.25])
    c1 = rot @ c2 @ rot.T
    assert not np.allclose(c1 @ c2, c2 @ c1)
    a = rng.multivariate_normal(np.zeros(2), c1, size=400_000)
    b = rng.multivariate_normal(np.zeros(2), c2, size=400_000)
    exact = np.trace(c1 + c2 - 2 * sqrtm(c1 @ c2).real)  # 3.017
    wrong = np.trace(c1 + c2 - 2 * sqrtm(c1).real @ sqrtm(c2).real)  # 3.375; Σ√(λ₁λ₂) would give 0
    assert abs(exact - wrong) > 0.3  # the test can tell them apart
    assert abs(frechet_distance(a, b) - exact) < 0.05


def test_precision_recall_and_memorisation_extremes():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 4))
    assert precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(real, rng.normal(size=(400, 4)) + 50)
    assert far == {"precision": 0.0, "recall": 0.0}
    collapsed = precision_recall(real, rng.normal(size=(400, 4)) * 0.05)  # faithful but not diverse
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.3
    train, test = rng.normal(size=(1000, 4)), rng.normal(size=(1000, 4))
    assert memorisation(train[:200], train, test)["share"] == 1.0
    fresh = memorisation(rng.normal(size=(4000, 4)), train, test, quantile=0.05)["share"]
    assert 0.03 < fresh < 0.07

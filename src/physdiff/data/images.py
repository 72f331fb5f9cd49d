"""Image datasets: scikit-learn's bundled 8×8 digits (the default, no network), MNIST and
Fashion-MNIST from their IDX files, and a user's folder of PNG images.

Every loader returns an :class:`ImageData` in *data units*: float32 pixels in [0, 1], shape
(N, C, H, W), labels int64 (or None), with a fixed train/test split. The network sees
x = 2·pixel − 1 ∈ [−1, 1] (a fixed Normalizer, shift 0.5 and scale 0.5).
"""

from __future__ import annotations

import gzip
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PhysdiffError

IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist", "images")
# the sets read from data.folder, and what that folder holds (digits is bundled with scikit-learn)
FOLDER_HOLDS = {"mnist": "IDX files", "fashion-mnist": "IDX files", "images": "PNG images"}

# The standard IDX files (LeCun et al. 1998; Xiao et al. 2017) and the usual mirrors.
MAX_IDX_CLASSES = 1000  # labels beyond this are a corrupt file, not a dataset
IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
IDX_URLS = {"mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")

# IDX type byte → numpy big-endian dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
PNG_SUFFIXES = (".png",)


@dataclass(frozen=True)
class ImageData:
    """A split image dataset in data units (pixels in [0, 1])."""

    name: str
    train_x: np.ndarray  # (N, C, H, W) float32
    train_y: np.ndarray | None  # (N,) int64
    test_x: np.ndarray
    test_y: np.ndarray | None
    class_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def _split(x: np.ndarray, y: np.ndarray | None, test_fraction: float, seed: int = 0):
    """A fixed, class-stratified permutation split (the same on every machine)."""
    rng = np.random.default_rng(seed)
    if y is None:
        perm = rng.permutation(len(x))
        n_test = round(test_fraction * len(x))
        return x[perm[n_test:]], None, x[perm[:n_test]], None
    test = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        idx = idx[rng.permutation(len(idx))]
        test.append(idx[:round(test_fraction * len(idx))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(x)), test)
    return x[train], y[train], x[test], y[test]


def load_digits() -> ImageData:
    """scikit-learn's 8×8 hand-written digits (1797 images, 17 grey levels 0..16, labels 0-9),
    split 80/20 per class with a fixed seed: 1438 training and 359 test images."""
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    y = bunch.target.astype(np.int64)
    tx, ty, vx, vy = _split(x, y, 0.2)
    return ImageData("digits", tx, ty, vx, vy, tuple(str(k) for k in range(10)))


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed): magic 0x0000, a type byte, the number
    of dimensions, the dimensions as big-endian int32, then the data."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise PhysdiffError(f"IDX file {str(path)!r} could not be read: {exc}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise PhysdiffError(f"{str(path)!r} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise PhysdiffError(f"IDX file {str(path)!r} has a truncated header")
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if any(d <= 0 for d in dims) or len(raw) - header != expected:
        raise PhysdiffError(f"IDX file {str(path)!r} is truncated or corrupt: header says {dims} "
                            f"({expected} bytes of data), file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def download_idx(name: str, folder: str | Path, base_url: str | None = None) -> None:
    """Fetch the four gzip IDX files of ``name`` into ``folder`` (each written atomically)."""
    from ..checkpoint import atomic_write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = base_url or IDX_URLS[name]
    for stem in IDX_FILES.values():
        if _find_idx(folder, stem) is not None:
            continue
        url = f"{base}{stem}.gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                data = response.read()
        except OSError as exc:
            raise PhysdiffError(f"could not download {url}: {exc}; put the IDX files in {str(folder)!r} "
                                "by hand and train without downloading") from None
        atomic_write_bytes(folder / f"{stem}.gz", data)


def load_idx_dataset(name: str, folder: str | Path, *, download: bool = False) -> ImageData:
    """MNIST or Fashion-MNIST from the standard four IDX files in ``folder`` (plain or .gz);
    the official 60 000 / 10 000 train/test split."""
    if not folder:
        raise PhysdiffError(f"dataset {name!r} needs data.folder (the folder of its IDX files)")
    folder = Path(folder)
    if download:
        download_idx(name, folder)
    if not folder.is_dir():
        raise PhysdiffError(f"IDX folder {str(folder)!r} does not exist (allow data.download to fetch {name})")
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _find_idx(folder, stem)
        if path is None:
            raise PhysdiffError(f"{str(folder)!r} lacks {stem} (or {stem}.gz); the {name} IDX files are "
                                f"{', '.join(IDX_FILES.values())}")
        arrays[key] = read_idx(path)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise PhysdiffError(f"{name} {split} files disagree: images {x.shape}, labels {y.shape}; "
                                "expected (N, H, W) images and N labels")
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise PhysdiffError(f"{name} train and test images differ in size: {arrays['train_x'].shape[1:]} vs "
                            f"{arrays['test_x'].shape[1:]}")
    labels = np.concatenate([arrays["train_y"], arrays["test_y"]]).astype(np.int64)
    if labels.min() < 0 or labels.max() > MAX_IDX_CLASSES - 1:
        raise PhysdiffError(f"{name} labels run from {labels.min()} to {labels.max()}; IDX class labels must be "
                            f"0..{MAX_IDX_CLASSES - 1} (corrupt or foreign label file?)")
    k = int(labels.max()) + 1
    names = FASHION_CLASSES if name == "fashion-mnist" and k == 10 else tuple(str(i) for i in range(k))

    def pixels(a):
        return (a.astype(np.float32) / 255.0)[:, None]

    return ImageData(name, pixels(arrays["train_x"]), arrays["train_y"].astype(np.int64),
                     pixels(arrays["test_x"]), arrays["test_y"].astype(np.int64), names)


def _read_png(path: Path) -> np.ndarray:
    """A PNG as grey levels in [0, 1], (H, W) (colour is averaged; alpha is dropped)."""
    from matplotlib.image import imread

    try:
        img = np.asarray(imread(path, format="png"), dtype=np.float32)
    except (OSError, ValueError, SyntaxError) as exc:
        raise PhysdiffError(f"image {str(path)!r} could not be read as PNG: {exc}") from None
    if img.ndim == 3:
        img = img[..., :3].mean(axis=-1)
    return img


def load_png_folder(folder: str | Path, *, test_fraction: float = 0.1) -> ImageData:
    """Grey-scale PNG images from ``folder``: either directly in it (unlabelled) or in one
    subfolder per class (labels in the sorted order of the subfolder names). All images must
    have the same size. A fixed 90/10 train/test split."""
    folder = Path(folder) if folder else None
    if folder is None or not folder.is_dir():
        raise PhysdiffError(f"image folder {str(folder or '')!r} does not exist (set data.folder)")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        empty = [d.name for d in subdirs if not any(f.suffix.lower() in PNG_SUFFIXES for f in d.iterdir())]
        if empty:  # a class with no image would be a class the model can never learn: refuse, never drop
            raise PhysdiffError(f"class folder {str(folder / empty[0])!r} holds no PNG image; every subfolder of "
                                f"{str(folder)!r} is a class: add images or remove it")
        classes = tuple(p.name for p in subdirs)
        files = [(f, k) for k, d in enumerate(subdirs) for f in sorted(d.iterdir()) if f.suffix.lower() in PNG_SUFFIXES]
    else:
        classes = ()
        files = [(f, -1) for f in sorted(folder.iterdir()) if f.suffix.lower() in PNG_SUFFIXES]
    if len(files) < 2:
        raise PhysdiffError(f"image folder {str(folder)!r} holds {len(files)} PNG images; need at least 2")
    images = []
    for f, _ in files:
        img = _read_png(f)
        if images and img.shape != images[0].shape:
            raise PhysdiffError(f"image {str(f)!r} is {img.shape[1]}×{img.shape[0]}, others are "
                                f"{images[0].shape[1]}×{images[0].shape[0]}; all images must have one size")
        images.append(img)
    x = np.stack(images)[:, None].astype(np.float32)
    y = np.array([k for _, k in files], dtype=np.int64) if classes else None
    tx, ty, vx, vy = _split(x, y, test_fraction)
    return ImageData(folder.name, tx, ty, vx, vy, classes)


def load_image_dataset(data_cfg) -> ImageData:
    """The image dataset a [data] config names."""
    name = data_cfg.dataset
    if name == "digits":
        return load_digits()
    if name in IDX_URLS:
        return load_idx_dataset(name, data_cfg.folder, download=data_cfg.download)
    if name == "images":
        return load_png_folder(data_cfg.folder)
    raise PhysdiffError(f"unknown image dataset {name!r}; allowed: {', '.join(IMAGE_DATASETS)}")


def save_png_grid(images: np.ndarray, path: str | Path, *, nrow: int | None = None, pad: int = 1,
                  scale: int = 4) -> None:
    """Write (N, C, H, W) images in [0, 1] as one grey PNG grid, ``nrow`` images per row,
    each pixel enlarged ``scale`` times (written atomically)."""
    import io

    from matplotlib.image import imsave

    from ..checkpoint import atomic_write_bytes
    from ..plots import tile_images

    grid = tile_images(images, nrow or int(np.ceil(np.sqrt(len(images)))), pad, fill=1.0)
    grid = np.kron(grid, np.ones((scale, scale), dtype=np.float32))
    buf = io.BytesIO()
    imsave(buf, grid, cmap="gray_r", vmin=0, vmax=1, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())


__all__ = ["IMAGE_DATASETS", "ImageData", "download_idx", "load_digits", "load_idx_dataset", "load_image_dataset",
           "load_png_folder", "read_idx", "save_png_grid"]

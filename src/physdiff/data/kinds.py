"""Kinds of data as strategies: the one place that decides, per kind, how data are loaded and
normalised, augmented in training, post-processed at sampling and written out, and which network
and sampler they get by default. How runs of each kind are evaluated and drawn is evaluation's to
say (``evaluation/registry.py``, keyed by the kind's name): data know nothing of evaluation.

A run records its kind in ``config.toml`` (``data.kind``); ``auto`` is resolved when the config
is read (image sets → image, a file → file, a registered lattice theory → lattice, otherwise
toy), so old run directories that predate the key still load. Adding a kind is one subclass of
:class:`DataKind` and one entry of ``KINDS``; no code outside this file tests a kind's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import PhysdiffError
from .arrays import load_array
from .images import IMAGE_DATASETS
from .toy import TOY_DATASETS, ToyDataset, get_toy

KIND_NAMES = ("toy", "file", "image", "lattice")
NORMALIZATIONS = ("auto", "standard", "scalar", "pixel")


@dataclass(frozen=True)
class DataKind:
    """name; normalization used for ``data.normalization = auto`` and ``normalizations``, those
    allowed: standard (per-dimension mean and std), scalar (x / one RMS over every site and
    sample: no shift, so translations and φ → −φ commute with it) or pixel ([0, 1] → [−1, 1]);
    value_range: samples are clipped to it (None: never clipped); arch: network for
    ``model.arch = auto``; sampler: default sampler options; sample_batch: samples per network
    batch by default; symmetry / gaussian: ``model.symmetry`` / ``model.gaussian`` = auto;
    images: samples are pictures (PNG grids, image metrics)."""

    name: str
    normalization: str
    arch: str
    value_range: tuple[float, float] | None = None
    sampler: dict = field(default_factory=lambda: {"sampler": "ddpm"})
    sample_batch: int = 4096
    symmetry: str = "none"  # model.symmetry = auto: "odd" makes the network odd in x (nets/symmetry.py)
    gaussian: str = "none"  # model.gaussian = auto: "spectrum" adds the Gaussian field's denoiser (nets/gaussian.py)
    normalizations: tuple[str, ...] = ("standard", "scalar")
    images: bool = False
    likelihood: bool = True  # evaluate --nll: the variational bound and ODE likelihood of test points

    # ---------------------------------------------------------------- training
    def load_training(self, cfg, progress=None):
        """The TrainingSet (data, labels, class names, normaliser) of a config's data
        (``progress``: of any long job that makes it, ``progress.py``)."""
        from .arrays import Normalizer, TrainingSet

        x = training_array(cfg.data)
        return TrainingSet(x, None, (), Normalizer.fit(self.resolve_normalization(cfg), x))

    def resolve_normalization(self, cfg) -> str:
        return self.normalization if cfg.data.normalization == "auto" else cfg.data.normalization

    def resolve_symmetry(self, cfg) -> str:
        return self.symmetry

    def augmentation(self, cfg):
        """A function (x, generator) -> x of random symmetry transforms for training, or None."""
        return None

    def toy(self, data_cfg):
        """The toy dataset the config names (None for data that are not a toy distribution)."""
        return None

    def theory(self, cfg):
        """The lattice theory of the config (None for data that are not a lattice field)."""
        return None

    # ---------------------------------------------------------------- sampling
    def postprocess(self, x: np.ndarray, cfg=None) -> np.ndarray:
        """Samples in data units as the kind allows them (clipped to ``value_range``)."""
        return x if self.value_range is None else np.clip(x, *self.value_range)

    def output_shape(self, data_shape: tuple[int, ...], cfg=None) -> tuple[int, ...]:
        """The shape of one sample in the files users exchange."""
        return tuple(data_shape)

    def to_output(self, x: np.ndarray, cfg=None) -> np.ndarray:
        """Samples (n, *data_shape) as the files users exchange hold them."""
        return x

    def sidecar(self, cfg, generator: str, sampler: dict) -> dict | None:
        """The JSON written beside a samples file (None: none)."""
        return None


@dataclass(frozen=True)
class ToyKind(DataKind):
    def toy(self, data_cfg):

        if data_cfg.dataset == "gaussian":
            from .toy import gaussian

            return gaussian(data_cfg.mean, data_cfg.cov)
        return resolve_toy(data_cfg.dataset)


@dataclass(frozen=True)
class FileKind(DataKind):
    """A user's (N, D) file. A share of its rows (``data.validation_fraction``, drawn by
    ``data.seed``, recorded by the run in validation.npy) is held out of training: the
    normaliser is fitted and the network trained on the rest, the validation loss and evaluate's
    reference and memorisation check use the held-out rows (``evaluation/references.py``)."""

    def load_training(self, cfg, progress=None, *, array=None, held_out=None):
        from .arrays import (
            Normalizer,
            TrainingSet,
            check_array,
            check_held_out,
            load_array,
            split_rows,
            validation_indices,
        )

        where = "the data array" if array is not None else f"data file {cfg.data.file!r}"
        x = check_array(array, where) if array is not None else load_array(cfg.data.file)
        if held_out is not None:
            held_out = check_held_out(held_out, len(x), "the run's held-out rows (validation.npy)",
                                      cfg.data.validation_fraction)
        else:
            held_out = validation_indices(len(x), cfg.data.validation_fraction, cfg.data.seed, where)
        validation = None
        if held_out is not None:
            x, validation = split_rows(x, held_out)
        return TrainingSet(x, None, (), Normalizer.fit(self.resolve_normalization(cfg), x), validation, held_out)


@dataclass(frozen=True)
class ImageKind(DataKind):
    def load_training(self, cfg, progress=None):
        from .arrays import Normalizer, TrainingSet
        from .images import load_image_dataset

        images = load_image_dataset(cfg.data)
        labels = images.train_y if cfg.data.conditional and images.num_classes > 1 else None
        return TrainingSet(images.train_x, labels, images.class_names if labels is not None else (),
                           Normalizer.fit(self.resolve_normalization(cfg), images.train_x))


@dataclass(frozen=True)
class LatticeKind(DataKind):
    """Fields of a lattice theory (``lattice/theory.py``): training sets from the reference Monte
    Carlo, the theory's symmetries as augmentation, samples post-processed and checked by the
    theory and written as ensembles ((N, L, L) with their JSON)."""

    def theory(self, cfg):
        from ..lattice.data import theory_of

        return theory_of(cfg)

    def load_training(self, cfg, progress=None):
        from ..lattice.conditioning import conditioning_of, config_at
        from .arrays import Normalizer, TrainingSet

        cond = conditioning_of(cfg)
        if cond is None:
            x = self.training_fields(cfg, cfg.data.n_train, cfg.data.seed, progress)
            return TrainingSet(x, None, (), Normalizer.fit(self.resolve_normalization(cfg), x))
        # a coupling-conditioned run: n_train configurations shared by the grid's couplings, each labelled
        # with its coupling (the label is the network's input, not a class); every set from the same seed
        sizes = np.diff(np.linspace(0, cfg.data.n_train, cond.points + 1).round().astype(int))
        parts = [self.training_fields(config_at(cfg, c), int(k), cfg.data.seed, progress)
                 for c, k in zip(cond.grid, sizes, strict=True)]
        x = np.concatenate(parts)
        labels = np.concatenate([np.full(len(part), c) for part, c in zip(parts, cond.grid, strict=True)])
        return TrainingSet(x, labels, (), Normalizer.fit(self.resolve_normalization(cfg), x))

    def training_fields(self, cfg, n: int, seed: int, progress=None) -> np.ndarray:
        """n configurations of the theory ``cfg`` names, as the model's variable (C, L, L)."""
        from ..lattice.data import lattice_training_set

        theory, L = self.theory(cfg), cfg.theory["L"]
        x, _ = lattice_training_set(theory, L, n, seed, progress=progress)
        x = x[:n]
        embedding = self.embedding(cfg)
        if embedding is not None:  # the continuous variable, drawn exactly given each configuration
            x = embedding.lift(x, np.random.default_rng([seed, 0xE3BED]))
        return x.reshape(-1, theory.components, L, L)  # channels = the field's components

    def resolve_symmetry(self, cfg) -> str:
        return self.symmetry if self.theory(cfg).z2_symmetric else "none"

    def augmentation(self, cfg):
        return self.theory(cfg).augment

    def embedding(self, cfg):
        from ..lattice.data import embedding_of

        return embedding_of(cfg)

    def postprocess(self, x: np.ndarray, cfg=None) -> np.ndarray:
        """Model samples as the theory's field: a continuous embedding's variable mapped back by an
        exact draw of the spins given it; else the theory's own read-out (spins through the sign)."""
        if cfg is None:
            return x
        embedding = self.embedding(cfg)
        if embedding is not None:
            return embedding.project(x)
        return self.theory(cfg).postprocess(x)

    def output_shape(self, data_shape, cfg=None):
        return self.theory(cfg).field_shape(cfg.theory["L"])

    def to_output(self, x: np.ndarray, cfg=None) -> np.ndarray:
        return x.reshape(len(x), *self.output_shape(x.shape[1:], cfg))

    def sidecar(self, cfg, generator: str, sampler: dict) -> dict:
        return {"params": self.theory(cfg).params, "generator": generator, "chains": 1, "sampler": sampler}


# 1000 U-Net evaluations per image sample (twice with guidance) are minutes on a CPU; DDPM on 100
# respaced steps is within the noise of the 1000-step sampler (benchmarks/README.md).
KINDS = {
    "toy": ToyKind("toy", "standard", "mlp"),
    "file": FileKind("file", "standard", "mlp"),
    "image": ImageKind("image", "pixel", "unet", (0.0, 1.0), {"sampler": "ddpm", "steps": 100}, 512,
                       normalizations=("pixel", "standard", "scalar"), images=True, likelihood=False),
    # lattice: a residual MLP on the flattened field; its exact divergence (D = L² backward passes
    # per ODE evaluation) is ~10x cheaper on a CPU than the periodic U-Net's (model.arch = unet)
    # exact Gaussian part from the data's power spectrum (benchmarks/README.md: the raw action density).
    # Only the scalar normalisation: a per-site shift would break q(φ) = q(−φ) of the odd network.
    # Default sampler: the probability-flow ODE, whose samples (and exact log q) every documented
    # raw lattice number comes from; `sample`, `evaluate` and `plot` use it unless told otherwise.
    "lattice": LatticeKind("lattice", "scalar", "mlp", None, {"sampler": "ode"}, 1024, "odd",
                           "spectrum", normalizations=("scalar",), likelihood=False),
}


def _reserve_dataset_names() -> None:
    """Keep the toy and image datasets' names from lattice theories (``lattice/theory.py``)."""
    from ..lattice.theory import reserve_names

    reserve_names(TOY_DATASETS, "a toy dataset")
    reserve_names(IMAGE_DATASETS, "an image set")


_reserve_dataset_names()


def resolve_kind(data_cfg) -> DataKind:
    """The DataKind of a [data] config (``kind = auto`` resolved from dataset and file)."""
    from ..lattice.theory import is_theory
    from .images import IMAGE_DATASETS

    name = data_cfg.kind
    if name == "auto":
        name = ("file" if data_cfg.file else "image" if data_cfg.dataset in IMAGE_DATASETS
                else "lattice" if is_theory(data_cfg.dataset) else "toy")
    return KINDS[name]


__all__ = ["KINDS", "KIND_NAMES", "NORMALIZATIONS", "DataKind", "FileKind", "ImageKind", "LatticeKind", "ToyKind",
           "resolve_kind"]


def resolve_toy(name: str) -> ToyDataset:
    """The toy dataset ``name``, or a PhysdiffError listing the allowed names."""
    try:
        return get_toy(name)
    except KeyError:
        import difflib

        from ..lattice.theory import is_theory, theory_names

        if is_theory(name) or name in IMAGE_DATASETS:
            what = "a lattice theory" if is_theory(name) else "an image set"
            raise PhysdiffError(f"dataset {name!r} is {what}, not a toy distribution; toy datasets: "
                                f"{', '.join(TOY_DATASETS)}") from None
        allowed = (*TOY_DATASETS, *IMAGE_DATASETS, *theory_names())
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PhysdiffError(f"unknown dataset {name!r}{hint}; allowed: {', '.join(allowed)}") from None


def toy_for(data_cfg) -> ToyDataset | None:
    """The toy dataset a [data] config names (None when it names a file, an image set or a theory)."""
    return resolve_kind(data_cfg).toy(data_cfg)


def training_array(data_cfg) -> np.ndarray:
    """The training set a [data] config describes, (N, D) float64."""
    toy = toy_for(data_cfg)
    if toy is None:
        return load_array(data_cfg.file)
    return toy.sample(data_cfg.n_train, data_cfg.seed)

"""Datasets: toy 2D distributions, users' own (N, D) files and image sets, with the
normalisation of their kind (``kinds.py``) fitted on the training data and undone at sampling."""

from __future__ import annotations

import numpy as np

from .arrays import (
    MAX_ABS_VALUE,
    MIN_ROWS,
    MIN_VALIDATION_ROWS,
    VALIDATION_TAG,
    Normalizer,
    TrainingSet,
    check_array,
    check_fingerprint,
    check_held_out,
    data_fingerprint,
    load_array,
    read_npy,
    split_rows,
    validation_indices,
)
from .images import IMAGE_DATASETS, ImageData, load_image_dataset
from .kinds import KINDS, DataKind, resolve_kind, resolve_toy, toy_for, training_array
from .toy import TOY_DATASETS, ToyDataset, get_toy

__all__ = [
    "IMAGE_DATASETS",
    "KINDS",
    "MAX_ABS_VALUE",
    "MIN_ROWS",
    "MIN_VALIDATION_ROWS",
    "TOY_DATASETS",
    "VALIDATION_TAG",
    "DataKind",
    "ImageData",
    "Normalizer",
    "ToyDataset",
    "TrainingSet",
    "check_array",
    "check_fingerprint",
    "check_held_out",
    "data_fingerprint",
    "get_toy",
    "load_array",
    "load_image_dataset",
    "load_training",
    "normalization_of",
    "read_npy",
    "resolve_kind",
    "resolve_toy",
    "split_rows",
    "toy_for",
    "training_array",
    "validation_indices",
]



def normalization_of(cfg) -> str:
    """The normaliser a config asks for: ``data.normalization``, or its kind's default."""
    return resolve_kind(cfg.data).resolve_normalization(cfg)


def load_training(cfg, *, array: np.ndarray | None = None, held_out: np.ndarray | None = None,
                  progress=None) -> TrainingSet:
    """The training split a config describes (its kind's strategy), with the normaliser of its
    kind (or of ``data.normalization``) fitted on it, and labels if ``data.conditional``.
    A data file's run only: ``array``, the data given in memory instead of read from
    ``data.file``; ``held_out``, the held-out rows a run recorded (else drawn by data.seed). ``progress``: of a
    training set that is made first (lattice Monte Carlo), ``progress.py``."""
    kind = resolve_kind(cfg.data)
    if array is None and held_out is None:
        return kind.load_training(cfg, progress=progress)
    return kind.load_training(cfg, array=array, held_out=held_out, progress=progress)

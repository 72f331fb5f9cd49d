"""Evaluation of a trained run, one entry point per job whatever the kind of data:
``evaluate(run, ...) -> report`` (a JSON-ready dict, every number beside its noise floor; see
``references.py``), ``figures(run, ...) -> {file name: Figure}``, ``format_report`` and
``write_report``. Vector runs: ``vectors.py``; image runs: ``images.py``; lattice runs (φ⁴,
Ising): ``lattice.py``, against the reference Monte Carlo."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..checkpoint import METRICS_FILE, atomic_write_bytes, json_text, read_metrics
from ..errors import PhysdiffError
from ..provenance import current, recorded
from . import images, lattice, vectors  # each registers its evaluator (registry.py)
from .references import reference_sets
from .registry import evaluator_of, evaluator_of_report

REPORT_FILE = "evaluation.json"


@recorded
def evaluate(run, n: int | None = None, seed: int = 0, samples: np.ndarray | None = None, *,
             sampler_args: dict | None = None, nll: bool = False, nll_n: int = 500, log=print,
             progress=None) -> dict:
    """The evaluation report of ``run`` (n samples; None: 5000 for vectors, the training split's
    size for images). ``sampler_args``: keyword arguments of ``LoadedRun.sample``; ``progress``:
    of the sampling, the reference Monte Carlo, the classifier's training (``progress.py``).
    The report ends with its ``"provenance"`` (``provenance.py``)."""
    if nll and not run.kind.likelihood:
        raise PhysdiffError(f"the likelihood report is for vector data, not for {run.kind.name} runs"
                            + ("; a lattice run's samples carry their exact log-density instead (the density sampler "
                               "with log_prob)" if run.theory is not None else ""))
    report = evaluator_of(run.kind.name).evaluate(run, n, seed, samples, sampler_args=sampler_args, nll=nll,
                                                  nll_n=nll_n, log=log, progress=progress)
    return report | {"provenance": current().record(run.device)}


def format_report(report: dict) -> str:
    """A readable table of a report of :func:`evaluate`."""
    return evaluator_of_report(report).format_report(report)


def write_report(run, report: dict) -> None:
    """RUN/evaluation.json, atomically (evaluation_kappa0.27.json for a coupling-conditioned run at
    κ = 0.27: ``LoadedRun.file_tag``)."""
    name = Path(REPORT_FILE)
    atomic_write_bytes(run.path / f"{name.stem}{run.file_tag}{name.suffix}", (json_text(report) + "\n").encode())


def loss_figure(run) -> dict:
    """{"loss.png": Figure} of the run's metrics.csv ({} if it has no rows)."""
    from ..plots import plot_loss
    from ..training import VALIDATION_COLUMN

    name = run.cfg.data.file or run.cfg.data.dataset
    metrics_path = run.path / METRICS_FILE
    if metrics_path.is_file():
        rows, skipped = read_metrics(metrics_path)
        if skipped:
            warnings.warn(f"{str(metrics_path)!r}: {skipped} unreadable line(s) skipped in the loss figure",
                          stacklevel=2)
        if {"step", "loss", "lr"} <= rows.keys() and len(rows["step"]):
            return {"loss.png": plot_loss(rows["step"], rows["loss"], rows["lr"], f"{name}: training loss",
                                          val_loss=rows.get(VALIDATION_COLUMN))}
    return {}


def figures(run, n: int = 3000, seed: int = 0, *, guidance: float | None = None, samples=None, snaps=None,
            progress=None) -> dict:
    """{file name: Figure} of every figure of the run, training loss included (``progress``: of
    the sampling and any reference Monte Carlo, ``progress.py``)."""
    figs = evaluator_of(run.kind.name).figures(run, n, seed, guidance=guidance, samples=samples, snaps=snaps,
                                               progress=progress)
    return figs | loss_figure(run)


__all__ = ["REPORT_FILE", "evaluate", "figures", "format_report", "images", "lattice", "loss_figure", "reference_sets",
           "vectors", "write_report"]

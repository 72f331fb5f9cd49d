"""Evaluation of a trained run, one entry point per job whatever the kind of data:
``evaluate(run, ...) -> report`` (a JSON-ready dict, every number beside its noise floor; see
``references.py``), ``figures(run, ...) -> {file name: Figure}``, ``format_report`` and
``write_report``. Vector runs: ``vectors.py``; image runs: ``images.py``; lattice runs (φ⁴,
Ising): ``lattice.py``, against the reference Monte Carlo."""

from __future__ import annotations

import json

import numpy as np

from ..checkpoint import atomic_write_bytes
from ..errors import PhysdiffError
from . import images, lattice, vectors
from .references import reference_sets

REPORT_FILE = "evaluation.json"


def evaluate(run, n: int | None = None, seed: int = 0, samples: np.ndarray | None = None, *,
             sampler_args: dict | None = None, nll: bool = False, nll_n: int = 500, log=print) -> dict:
    """The evaluation report of ``run`` (n samples; None: 5000 for vectors, the training split's
    size for images). ``sampler_args``: keyword arguments of ``LoadedRun.sample``."""
    if run.is_image:
        if nll:
            raise PhysdiffError("the likelihood report is available for vector data only, not yet for image runs")
        return images.evaluate(run, n, seed, samples, sampler_args=sampler_args, log=log)
    if run.kind.name == "lattice":
        if nll:
            raise PhysdiffError("the likelihood report is for vector data; a lattice run's samples carry their exact "
                                "log-density instead (sampler ode with log_prob)")
        return lattice.evaluate(run, n or 4000, seed, samples, sampler_args=sampler_args, log=log)
    return vectors.evaluate(run, n or 5000, seed, samples, sampler_args=sampler_args, nll=nll, nll_n=nll_n)


def format_report(report: dict) -> str:
    """A readable table of a report of :func:`evaluate`."""
    formatter = {"image": images, "lattice": lattice}.get(report.get("kind"), vectors)
    return formatter.format_report(report)


def write_report(run, report: dict) -> None:
    """RUN/evaluation.json, atomically."""
    atomic_write_bytes(run.path / REPORT_FILE, (json.dumps(report, indent=2) + "\n").encode())


def loss_figure(run) -> dict:
    """{"loss.png": Figure} of the run's metrics.csv ({} if it has no rows)."""
    from ..plots import plot_loss

    name = run.cfg.data.file or run.cfg.data.dataset
    metrics_path = run.path / "metrics.csv"
    if metrics_path.is_file():
        rows = np.genfromtxt(metrics_path, delimiter=",", names=True, ndmin=1)
        if rows.size:
            return {"loss.png": plot_loss(rows["step"], rows["loss"], rows["lr"], f"{name}: training loss")}
    return {}


def figures(run, n: int = 3000, seed: int = 0, *, guidance: float | None = None, samples=None, snaps=None) -> dict:
    """{file name: Figure} of every figure of the run, training loss included."""
    if run.is_image:
        figs = images.figures(run, seed, sampler_args=run.default_sampler(guidance))
    elif run.kind.name == "lattice":
        figs = lattice.figures(run, n, seed, samples)
    else:
        figs = vectors.figures(run, n, seed, samples, snaps)
    return figs | loss_figure(run)


__all__ = ["REPORT_FILE", "evaluate", "figures", "format_report", "images", "lattice", "loss_figure", "reference_sets",
           "vectors", "write_report"]

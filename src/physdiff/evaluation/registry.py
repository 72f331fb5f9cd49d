"""The registry of evaluators, keyed by data kind (``data/kinds.py``): what ``evaluate``,
``figures`` and ``format_report`` do for runs of each kind. It knows none of its plug-ins: each
evaluation module registers itself (``vectors.py`` for toy and file runs, ``images.py``,
``lattice.py``), and ``physdiff.evaluation`` imports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import PhysdiffError


@dataclass(frozen=True)
class Evaluator:
    """The three jobs of an evaluation for one kind of run, each with one signature:

    - ``evaluate(run, n, seed, samples, *, sampler_args, nll, nll_n, log, progress) -> dict``
      (n None: the kind's default size);
    - ``figures(run, n, seed, *, guidance, samples, snaps, progress) -> {file name: Figure}``;
    - ``format_report(report) -> str``.

    ``report_kind``: the ``"kind"`` its reports carry (``format_report`` reads it back)."""

    report_kind: str
    evaluate: Callable[..., dict]
    figures: Callable[..., dict]
    format_report: Callable[[dict], str]


EVALUATORS: dict[str, Evaluator] = {}  # data kind's name -> its evaluator


def register_evaluator(kinds: tuple[str, ...], evaluator: Evaluator) -> Evaluator:
    """Register ``evaluator`` for runs of the data kinds ``kinds`` (their ``DataKind.name``)."""
    for kind in kinds:
        EVALUATORS[kind] = evaluator
    return evaluator


def evaluator_of(kind: str) -> Evaluator:
    """The evaluator of runs of the data kind ``kind``, or one line naming those there are."""
    try:
        return EVALUATORS[kind]
    except KeyError:
        raise PhysdiffError(f"no evaluation for {kind!r} runs; there is one for: "
                            f"{', '.join(sorted(EVALUATORS))}") from None


def evaluator_of_report(report: dict) -> Evaluator:
    """The evaluator that wrote ``report`` (by its ``"kind"``; vector reports when it has none)."""
    kind = report.get("kind", "vector")
    for evaluator in EVALUATORS.values():
        if evaluator.report_kind == kind:
            return evaluator
    raise PhysdiffError(f"a report of kind {kind!r} is not one physdiff writes; those it writes: "
                        f"{', '.join(sorted({e.report_kind for e in EVALUATORS.values()}))}")


__all__ = ["EVALUATORS", "Evaluator", "evaluator_of", "evaluator_of_report", "register_evaluator"]

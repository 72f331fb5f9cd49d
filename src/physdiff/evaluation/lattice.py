"""Evaluation of a lattice run (any registered theory: φ⁴, Ising, a user's) against the reference Monte Carlo.

The noise-floor policy of ``references.py`` in its lattice form: a model ensemble is compared
with an independent Monte Carlo ensemble of the same theory (HMC + Wolff for φ⁴, Wolff for
Ising; a seed far from the training set's, cached like it), observable by observable, each with
its Γ-method error, as z = (model − reference)/√(δ² + δ²). A perfect model gives |z| of order 1;
the report also counts observables beyond 3 combined errors.
"""

from __future__ import annotations

import numpy as np

from .references import REFERENCE_SEED_BASE
from .registry import Evaluator, register_evaluator

REFERENCE_SIZE = 10_000  # Monte Carlo configurations of the reference (16 chains)
NAMES = {"m": "⟨M⟩", "abs_m": "⟨|M|⟩", "chi2": "χ₂ = V⟨M²⟩", "chi_connected": "χ_c = V(⟨M²⟩ − ⟨|M|⟩²)",
         "binder": "Binder U_L", "action_density": "action density S/V", "xi2": "ξ₂ (second moment)"}


def reference_ensemble(run, seed: int = 0, n: int = REFERENCE_SIZE, log=None, progress=None) -> np.ndarray:
    """(n, L, L) Monte Carlo configurations of the run's theory, independent of its training set
    (seed REFERENCE_SEED_BASE + seed), made once and cached as training sets are."""
    from ..lattice.data import lattice_training_set

    x, _ = lattice_training_set(run.theory, run.cfg.theory["L"], n, REFERENCE_SEED_BASE + 1009 * seed, log,
                                progress=progress)
    return x


def evaluate(run, n: int, seed: int, samples: np.ndarray | None = None, *, sampler_args: dict | None = None,
             log=print, progress=None) -> dict:
    """Report of ``n`` model configurations (or the given ``samples`` (N, 1, L, L)) against the
    reference ensemble: every observable of ``lattice.observables`` with its error and z.
    ``progress``: of the sampling and of the reference Monte Carlo (``progress.py``)."""
    from ..lattice.observables import SCALARS, as_table, compare, measure

    theory, L = run.theory, run.cfg.theory["L"]
    if samples is None:
        samples = run.sample(n, seed + 1, progress=progress, **(sampler_args or {})).samples
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), *theory.field_shape(L))
    ref = reference_ensemble(run, seed, log=log, progress=progress)
    model_t, ref_t = as_table(measure(x, theory)), as_table(measure(ref, theory, chains=16))
    z = compare(model_t, ref_t)
    return {"kind": "lattice", "run": str(run.path), "dataset": run.cfg.data.dataset, "theory": theory.params,
            "L": L, "n": len(x), "n_reference": len(ref), "sampler": sampler_args or run.default_sampler(),
            "model": model_t, "reference": ref_t, "z": z,
            "beyond_3_errors": [k for k in SCALARS if z[k] is not None and abs(z[k]) > 3],
            "not_comparable": [k for k in SCALARS if z[k] is None]}


def format_report(report: dict) -> str:
    """The observables of the model beside the reference, with z-scores."""
    from ..lattice.observables import SCALARS, format_z

    lines = [f"{report['dataset']} L = {report['L']} {report['theory']}: {report['n']} model configurations "
             f"against {report['n_reference']} Monte Carlo ones (Γ-method errors)",
             f"{'observable':<26} {'model':>22} {'reference':>22} {'z':>6}"]
    for k in SCALARS:
        m, r = report["model"][k], report["reference"][k]
        lines.append(f"{NAMES[k]:<26} {m['value']:>12.5g} ± {m['error']:<7.2g} {r['value']:>12.5g} ± "
                     f"{r['error']:<7.2g} {format_z(report['z'][k], '>+6.1f')}")
    bad, blind = report["beyond_3_errors"], report.get("not_comparable", [])
    lines.append("all within 3 combined errors" if not bad and not blind else
                 "; ".join(([f"beyond 3 combined errors: {', '.join(bad)}"] if bad else [])
                           + ([f"not comparable (both errors 0): {', '.join(blind)}"] if blind else [])))
    return "\n".join(lines)


def figures(run, n: int, seed: int, samples: np.ndarray | None = None, *, progress=None) -> dict:
    """{file name: Figure} of ``lattice.report.ensemble_figures``: histograms, correlators and
    configurations of the model's samples beside the reference Monte Carlo (the ratio panels' reference)."""
    from ..lattice.observables import as_table, measure
    from ..lattice.report import ensemble_figures

    theory, L = run.theory, run.cfg.theory["L"]
    drawn = samples is None  # sample i depends only on (seed, i): independent draws, ESS = n
    if drawn:
        samples = run.sample(n, seed + 1, progress=progress).samples
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), *theory.field_shape(L))
    ref = reference_ensemble(run, seed, progress=progress)
    ensembles = {"Monte Carlo": (ref, as_table(measure(ref, theory, chains=16)), 16),
                 "diffusion": (x, as_table(measure(x, theory)), 1)}
    return ensemble_figures(ensembles, theory, f"{theory.label}, L = {L}", reference="Monte Carlo",
                            independent=("diffusion",) if drawn else ())


def _evaluate(run, n, seed, samples=None, *, sampler_args=None, nll=False, nll_n=500, log=print, progress=None):
    return evaluate(run, n or 4000, seed, samples, sampler_args=sampler_args, log=log, progress=progress)


def _figures(run, n, seed, *, guidance=None, samples=None, snaps=None, progress=None):
    return figures(run, n, seed, samples, progress=progress)


register_evaluator(("lattice",), Evaluator("lattice", _evaluate, _figures, format_report))

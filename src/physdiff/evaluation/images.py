"""Evaluation and figures of image runs, with no download: a classifier trained by physdiff
supplies the feature space (see classifier.py); every metric comes with its floor, the same
quantity for real held-out images.

- FCD: Fréchet distance of the classifier features of n samples to those of the test split;
  floor: the same distance from the training split (n = its size) to the test split.
- conditional accuracy: share of samples asked for class k that the classifier reads as k;
  compare with the classifier's own test accuracy.
- precision / recall (Kynkäänniemi et al. 2019) of the samples against the test split; floor:
  the training split against the test split.
- memorisation: share of samples nearer a training image than 99% of test images are.
"""

from __future__ import annotations

import numpy as np

from ..data.images import ImageData, load_image_dataset
from ..run import resolve_guidance
from .registry import Evaluator, register_evaluator


def _features(data: ImageData, log, progress=None):
    """(feature function, name of the space, classifier or None, its test accuracy or None)."""
    if data.train_y is None or data.num_classes < 2:
        return (lambda x: np.asarray(x, dtype=np.float64).reshape(len(x), -1)), "pixels", None, None
    from ..classifier import features, load_or_train

    clf, acc = load_or_train(data, log=log, progress=progress)
    return (lambda x: features(clf, x)), "classifier features", clf, acc


def evaluate(run, n: int | None = None, seed: int = 0, samples: np.ndarray | None = None, *,
                    sampler_args: dict | None = None, log=print, progress=None) -> dict:
    """The image metrics of ``run`` on n samples (default: the size of the training split, so
    the FCD is comparable with its floor), drawn with labels i mod K if not given.
    ``sampler_args``: keyword arguments of LoadedRun.sample (sampler, steps, guidance, ...).
    ``progress``: of the sampling and of the classifier's training (``progress.py``)."""
    from ..classifier import predict
    from ..metrics import frechet_distance, memorisation, precision_recall

    data = load_image_dataset(run.cfg.data)
    n = n or len(data.train_x)
    sargs = dict(sampler_args or run.default_sampler())
    if samples is None:
        samples = run.sample(n, seed, progress=progress, **sargs).samples
    samples = samples[:n]
    feat, space, clf, clf_acc = _features(data, log, progress)
    f_train, f_test, f_samples = feat(data.train_x), feat(data.test_x), feat(samples)
    pr_model, pr_floor = precision_recall(f_test, f_samples), precision_recall(f_test, f_train)
    metrics = {
        "fcd": {"value": frechet_distance(f_samples, f_test), "floor": frechet_distance(f_train, f_test)},
        "precision": {"value": pr_model["precision"], "floor": pr_floor["precision"]},
        "recall": {"value": pr_model["recall"], "floor": pr_floor["recall"]},
    }
    mem = memorisation(samples, data.train_x, data.test_x)
    metrics["memorisation_share"] = {"value": mem["share"], "floor": mem["expected_for_fresh_data"]}
    report = {"kind": "image", "run": str(run.path), "dataset": data.name, "n": n, "seed": seed, "step": run.step,
              "feature_space": space, "n_train": len(data.train_x), "n_test": len(data.test_x),
              "guidance": resolve_guidance(sargs.pop("guidance", None)) if run.num_classes else None,
              "sampler": sargs, "metrics": metrics,
              "memorisation": mem}
    if clf is not None:
        report["classifier_test_accuracy"] = clf_acc
        if run.num_classes:
            asked = run.labels(np.arange(n))
            got = predict(clf, samples)
            metrics["conditional_accuracy"] = {"value": float((got == asked).mean()), "floor": clf_acc}
            report["per_class_accuracy"] = {name: float((got[asked == k] == k).mean())
                                            for k, name in enumerate(run.class_names) if (asked == k).any()}
    return report


def format_report(report: dict) -> str:
    lines = [f"run {report['run']}  dataset {report['dataset']}  step {report['step']}  n = {report['n']}  "
             f"(features: {report['feature_space']})"]
    if "classifier_test_accuracy" in report:
        lines.append(f"classifier test accuracy {report['classifier_test_accuracy']:.4f}")
    lines.append(f"{'metric':<22}{'model':>12}{'real data':>12}")
    for name, row in report["metrics"].items():
        lines.append(f"{name:<22}{row['value']:>12.4g}{row['floor']:>12.4g}")
    lines.append("real data: FCD and precision/recall of the training split against the test split; "
                 "conditional accuracy: the classifier's test accuracy; memorisation: expected for fresh data")
    return "\n".join(lines)


def figures(run, seed: int = 0, *, sampler_args: dict | None = None, per_class: int = 10,
                  report: dict | None = None, progress=None) -> dict:
    """{file name: Figure}: samples (a row per class), reverse process, guidance sweep (for
    conditional runs), samples beside their nearest training images, training loss."""
    import torch

    from ..metrics import memorisation, nearest
    from ..plots import plot_class_grid, plot_guidance_sweep, plot_image_process, plot_nearest, snapshot_times

    sargs = dict(sampler_args or run.default_sampler())
    guidance = sargs.pop("guidance", None)
    data = load_image_dataset(run.cfg.data)
    name, figs = data.name, {}
    k = run.num_classes
    if k:
        classes = np.repeat(np.arange(k), per_class)
        grid = run.sample(len(classes), seed, classes=classes, guidance=guidance, progress=progress, **sargs).samples
        w = resolve_guidance(guidance)
        figs["samples.png"] = plot_class_grid(grid, run.class_names, per_class,
                                              f"{name}: samples by class (guidance w = {w:g}, step {run.step})")
    else:
        grid = run.sample(8 * per_class, seed, progress=progress, **sargs).samples
        figs["samples.png"] = plot_class_grid(grid, None, per_class, f"{name}: samples (step {run.step})")
    # reverse process of a few samples (all timesteps, so the snapshots are exact steps)
    times = snapshot_times(run.schedule, levels=(0.0, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.97))
    m = min(6, k) if k else 6
    snaps = run.sample(m, seed, classes=np.arange(m) % k if k else None, guidance=guidance,
                       snapshot_steps=tuple(times), sampler="ddpm", steps=None, progress=progress).snapshots
    strip = [(t, np.clip(run.normalizer.decode(torch.from_numpy(snaps[t]).double()).numpy(), 0, 1))
             for t in sorted(snaps, reverse=True)]
    figs["reverse.png"] = plot_image_process(strip, run.schedule.T, f"{name}: reverse process $x_T \\to x_0$",
                                             [run.class_names[i % k] for i in range(m)] if k else None)
    if k:
        rows = []
        for w in (0.0, 0.5, 1.0, 2.0, 4.0):
            imgs = run.sample(k, seed, classes=np.arange(k), guidance=w, progress=progress, **sargs).samples
            rows.append((w, imgs))
        figs["guidance.png"] = plot_guidance_sweep(rows, run.class_names, f"{name}: guidance sweep (same noise)")
    # nearest training images of the first samples of the grid, one per class
    pick = grid[::per_class][:10]
    dist, idx = nearest(pick, data.train_x)
    thr = report["memorisation"]["threshold"] if report else memorisation(pick, data.train_x, data.test_x)["threshold"]
    figs["nearest.png"] = plot_nearest(pick, data.train_x[idx], dist, thr,
                                       f"{name}: samples (top) and nearest training images (pixel distance)")
    return figs


def _evaluate(run, n, seed, samples=None, *, sampler_args=None, nll=False, nll_n=500, log=print, progress=None):
    return evaluate(run, n, seed, samples, sampler_args=sampler_args, log=log, progress=progress)


def _figures(run, n, seed, *, guidance=None, samples=None, snaps=None, progress=None):
    return figures(run, seed, sampler_args=run.default_sampler(guidance), progress=progress)


register_evaluator(("image",), Evaluator("image", _evaluate, _figures, format_report))

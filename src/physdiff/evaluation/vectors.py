"""Evaluation and figures of vector runs (toy datasets and users' (N, D) files): distances to
fresh true sets beside their noise floors (``references.py``), each value/floor with a bootstrap
error over the reference pairs, far outliers, likelihoods, and for a file's run with held-out
rows the check for memorisation: are samples nearer the training rows than held-out rows are?"""

from __future__ import annotations

import numpy as np

from .. import seeding
from ..run import OUTLIER_MARGIN
from .references import held_out_split, reference_sets
from .registry import Evaluator, register_evaluator

DISTANCE_ROWS = ("sliced_wasserstein", "mean_error", "cov_error")
MEMORISATION_QUANTILE = 0.01  # share of held-out rows nearer the training rows than the threshold (>= 5 rows of them)
MEMORISATION_HELD_OUT = 5000  # held-out rows whose nearest training rows set the threshold (each costs a scan)


def outlier_share(x: np.ndarray, reference: np.ndarray, margin: float = OUTLIER_MARGIN) -> float:
    """Share of rows of x (N, D) with a coordinate outside the box [lo - m·w, hi + m·w] of the
    reference set (lo, hi its per-dimension min and max, w = hi - lo, m = ``margin``). A fresh
    true set of Gaussian data of 5000 points has w ≈ 7.4σ: its share is ~0."""
    from ..metrics import far_outliers

    return float(far_outliers(x, reference.min(0), reference.max(0), margin).mean())


def evaluate(run, n: int = 5000, seed: int = 0, samples: np.ndarray | None = None, *,
             sampler_args: dict | None = None, nll: bool = False, nll_n: int = 500, log=None,
             progress=None) -> dict:
    """The metrics of a vector run as a dict: every distance beside its noise floor (with
    value/floor and its bootstrap error over the reference pairs), and the share of far outliers
    (model samples vs a true set). ``nll``: also :func:`nll_report`.

    A data file's run with held-out rows (``references.held_out_split``) is compared with n of
    its held-out rows (n capped at their number), its floor is that of R disjoint n-row parts of
    its training rows, and R disjoint sets of n model samples are drawn (R n samples; given
    ``samples`` set how many pairs there are), so the error of value/floor holds the samples'
    own noise as well as the floor's. Its report adds ``memorisation``: :func:`memorisation`.
    ``progress``: of the sampling (``progress.py``)."""
    from ..metrics import compare

    refs, floors, toy, n = reference_sets(run, n, seed)
    split = held_out_split(run)
    pairs = len(refs) if split is not None else 1  # disjoint model sample sets
    if samples is None:
        samples = run.sample(pairs * n, seed, progress=progress, **(sampler_args or {})).samples
    pairs = max(1, min(pairs, len(samples) // n))
    if split is not None:
        refs, floors = refs[:pairs], floors[:pairs]
    samples = samples[:pairs * n].reshape(pairs * n, -1)
    flat = [r.reshape(n, -1) for r in refs], [f.reshape(n, -1) for f in floors]
    sets = [samples[r * n:(r + 1) * n] for r in range(pairs)] if split is not None else samples
    metrics = compare(sets, *flat, toy=toy)
    metrics["outlier_share"] = {"value": outlier_share(samples, flat[0][0]),
                                "floor": outlier_share(flat[1][0], flat[0][0])}
    report = {"kind": "vector", "run": str(run.path), "dataset": run.cfg.data.file or run.cfg.data.dataset,
              "n": n, "seed": seed, "step": run.step, "reference": _reference(run, split, len(floors)),
              "metrics": metrics}
    if split is not None:
        mem = memorisation(run, samples, *split)
        metrics["memorisation_share"] = {"value": mem["share"], "floor": mem["expected_for_fresh_data"]}
        report["memorisation"] = mem
    if nll:
        report["nll"] = nll_report(run, nll_n, seed)
    return report


def _reference(run, split, pairs: int) -> dict:
    """What the model was compared with, for the report."""
    if split is not None:
        return {"kind": "held-out rows", "n_held_out": len(split[1]), "n_train": len(split[0]), "pairs": pairs}
    if run.cfg.data.file:
        return {"kind": "halves of the data file (the run held no rows out: no memorisation check)", "pairs": pairs}
    return {"kind": "fresh draws", "pairs": pairs}


def memorisation(run, samples: np.ndarray, train: np.ndarray, held: np.ndarray) -> dict:
    """``metrics.memorisation`` in the run's network units (each dimension standardised as the
    network saw it): the share of samples nearer their nearest training row than all but a
    quantile q of held-out rows are (q = MEMORISATION_QUANTILE, raised to 5/K for K < 500
    held-out rows so that the threshold is not one row's accident; at most MEMORISATION_HELD_OUT
    of them). Fresh draws from the data's
    law give q; a model that copies training rows gives up to 1. ``flagged``: the share exceeds
    2q + 3 binomial errors √(q(1−q)/N) of N samples (2q: the threshold, an order statistic of
    ~qK ≥ 5 distances, is itself uncertain by ~1/√(qK))."""
    import torch

    from ..metrics import memorisation as share_nearer

    def units(x):
        x = torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(len(x), *run.data_shape))
        return run.normalizer.encode(x).numpy().reshape(len(x), -1)

    held = held[:MEMORISATION_HELD_OUT]  # in the order drawn: a uniform subset
    q = max(MEMORISATION_QUANTILE, min(0.5, 5 / len(held)))
    out = share_nearer(units(samples), units(train), units(held), quantile=q)
    bar = 2 * q + 3 * np.sqrt(q * (1 - q) / len(samples))
    return out | {"n_samples": len(samples), "n_held_out": len(held), "flag_above": float(bar),
                  "flagged": bool(out["share"] > bar), "units": "network (standardised)"}


def nll_report(run, n: int, seed: int) -> dict:
    """Variational bound (Ho et al. 2020 eq. 5) and ODE log-likelihood on n fresh test points,
    in data units; KL(p_data ‖ p_model) where the density is exact."""
    import torch

    from ..likelihood import nats_to_bits_per_dim, ode_log_likelihood, variational_bound

    refs, _, toy, n = reference_sets(run, n, seed + 7, repeats=1)
    x = refs[0]
    D = int(np.prod(x.shape[1:]))
    z = run.normalizer.encode(torch.from_numpy(x).double()).to(run.device)
    jac = run.normalizer.log_abs_det_jacobian(run.data_shape)
    d = run.cfg.diffusion
    vb = variational_bound(run.denoiser, run.schedule, z, prediction=d.prediction, variance=d.variance,
                           log_det_jacobian=jac, generator=seeding.generator(seed, run.device))
    ode = ode_log_likelihood(run.denoiser, run.schedule, z, prediction=d.prediction, log_det_jacobian=jac)

    def stat(v):
        v = np.asarray(v, dtype=np.float64)
        return {"mean": float(v.mean()), "stderr": float(v.std(ddof=1) / np.sqrt(len(v)))}

    nll_ode = -ode["log_prob"].cpu().numpy()
    vb = {k: v.cpu().numpy() for k, v in vb.items()}
    terms = {k: stat(vb[k]) for k in ("prior", "diffusion", "decoder")}
    out = {"n": n, "dim": D,
           "vb_nats": stat(vb["total"]), "vb_bits_per_dim": nats_to_bits_per_dim(float(vb["total"].mean()), D),
           "vb_terms_nats (standardised units)": terms,
           "ode_nll_nats": stat(nll_ode), "ode_bits_per_dim": nats_to_bits_per_dim(float(nll_ode.mean()), D),
           "ode_nfe": ode["nfe"], "divergence": ode["estimator"],
           "data_log_det_jacobian": jac}
    if toy is not None and toy.log_prob_fn is not None:
        out["kl_data_model_nats"] = stat(toy.log_prob(x) + nll_ode)
    return out


def format_ratio(row: dict) -> str:
    """value/floor, ± its bootstrap error where there is one (several reference pairs)."""
    ratio, error = row.get("ratio"), row.get("ratio_error")
    if ratio is None:  # a report of an older physdiff
        ratio = row["value"] / row["floor"] if row["floor"] not in (0, 0.0) else float("nan")
    return f"{ratio:.2f} ± {error:.2f}" if error is not None and np.isfinite(error) else f"{ratio:.2f}"


def format_report(report: dict) -> str:
    lines = [f"run {report['run']}  dataset {report['dataset']}  step {report['step']}  n = {report['n']}"]
    ref = report.get("reference", {})
    if ref.get("kind") == "held-out rows":
        lines.append(f"reference: {report['n']} of the {ref['n_held_out']} held-out rows; noise floor: "
                     f"{ref['pairs']} parts of {report['n']} of the {ref['n_train']} training rows")
    elif ref.get("kind"):
        lines.append(f"reference: {ref['kind']}")
    lines.append(f"{'metric':<20}{'model':>14}{'noise floor':>14}{'ratio':>16}")
    for name, row in report["metrics"].items():
        shown = format_ratio(row) if name in DISTANCE_ROWS else ""
        lines.append(f"{name:<20}{row['value']:>14.5g}{row['floor']:>14.5g}{shown:>16}")
    if any(name in DISTANCE_ROWS for name in report["metrics"]):
        lines.append("ratio = model / noise floor, ± its bootstrap error over the reference pairs (none: one pair)")
    if "memorisation" in report:
        mem = report["memorisation"]
        lines.append(f"memorisation: {mem['share']:.1%} of samples lie nearer a training row than "
                     f"{1 - mem['expected_for_fresh_data']:.1%} of held-out rows do (fresh data: "
                     f"{mem['expected_for_fresh_data']:.1%})"
                     + (f"; FLAGGED: above {mem['flag_above']:.1%}, the model copies its training data"
                        if mem["flagged"] else ""))
    if "nll" in report:
        r = report["nll"]
        lines.append(f"NLL on {r['n']} test points (data units): variational bound {r['vb_nats']['mean']:.4f} "
                     f"± {r['vb_nats']['stderr']:.4f} nats ({r['vb_bits_per_dim']:.4f} bits/dim); ODE "
                     f"{r['ode_nll_nats']['mean']:.4f} ± {r['ode_nll_nats']['stderr']:.4f} nats "
                     f"({r['ode_bits_per_dim']:.4f} bits/dim, NFE {r['ode_nfe']}, divergence {r['divergence']})")
        t = r["vb_terms_nats (standardised units)"]
        lines.append("  bound terms (nats, standardised units): " +
                     ", ".join(f"{k} {v['mean']:.4f}" for k, v in t.items()))
        if "kl_data_model_nats" in r:
            kl = r["kl_data_model_nats"]
            lines.append(f"  KL(p_data ‖ p_model) = {kl['mean']:.4f} ± {kl['stderr']:.4f} nats")
    share = report["metrics"]["outlier_share"]
    if share["value"] > share["floor"]:
        lines.append(f"far outliers: {share['value']:.2%} of samples lie more than {OUTLIER_MARGIN:g} data widths "
                     f"outside the data's range (fresh true set: {share['floor']:.2%})")
    return "\n".join(lines)


def figures(run, n: int, seed: int, samples=None, snaps=None, *, progress=None) -> dict:
    """{file name: Figure}: samples beside data, forward and reverse process, loss."""
    import torch

    from .. import diffusion as dif
    from ..plots import plot_process, plot_samples, snapshot_times

    split = held_out_split(run)
    if split is not None:  # a picture of the data: up to n of all their rows, not only the few held out
        data = np.concatenate(split)
        n = min(n, len(data))
        reference = data[np.sort(np.random.default_rng(seed).permutation(len(data))[:n])]
    else:
        refs, _, _, n = reference_sets(run, n, seed, repeats=1)
        reference = refs[0]
    T = run.schedule.T
    times = snapshot_times(run.schedule)
    if samples is None or snaps is None:
        res = run.sample(n, seed, snapshot_steps=tuple(times), progress=progress)
        samples, snaps = res.samples, res.snapshots
    name = run.cfg.data.file or run.cfg.data.dataset
    figs = {"samples.png": plot_samples(reference.reshape(n, -1), samples[:n].reshape(n, -1),
                                        f"{name}: data vs. model (step {run.step})")}
    x0 = run.normalizer.encode(torch.from_numpy(reference).double()).float()
    g = seeding.generator(seed)
    forward = []
    for tt in times:
        if tt == 0:
            forward.append((0, x0.numpy()))
            continue
        t = torch.full((n,), tt - 1, dtype=torch.long)
        forward.append((tt, dif.q_sample(run.schedule, x0, t, torch.randn(x0.shape, generator=g)).numpy()))
    figs["forward.png"] = plot_process([(t, x.reshape(n, -1)) for t, x in forward], T, reverse=False,
                                       title=f"{name}: forward process $x_0 \\to x_T$ (T = {T})")
    figs["reverse.png"] = plot_process([(t, snaps[t].reshape(len(snaps[t]), -1)) for t in sorted(snaps, reverse=True)],
                                       T, reverse=True, title=f"{name}: reverse process $x_T \\to x_0$ (T = {T})")
    return figs


def _evaluate(run, n, seed, samples=None, *, sampler_args=None, nll=False, nll_n=500, log=print, progress=None):
    return evaluate(run, n or 5000, seed, samples, sampler_args=sampler_args, nll=nll, nll_n=nll_n, progress=progress)


def _figures(run, n, seed, *, guidance=None, samples=None, snaps=None, progress=None):
    return figures(run, n, seed, samples, snaps, progress=progress)


register_evaluator(("toy", "file"), Evaluator("vector", _evaluate, _figures, format_report))

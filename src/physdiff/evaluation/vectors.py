"""Evaluation and figures of vector runs (toy datasets and users' (N, D) files): distances to
fresh true sets beside their noise floors (``references.py``), far outliers, and likelihoods."""

from __future__ import annotations

import numpy as np

from .. import seeding
from ..run import OUTLIER_MARGIN
from .references import reference_sets

DISTANCE_ROWS = ("sliced_wasserstein", "mean_error", "cov_error")


def outlier_share(x: np.ndarray, reference: np.ndarray, margin: float = OUTLIER_MARGIN) -> float:
    """Share of rows of x (N, D) with a coordinate outside the box [lo - m·w, hi + m·w] of the
    reference set (lo, hi its per-dimension min and max, w = hi - lo, m = ``margin``). A fresh
    true set of Gaussian data of 5000 points has w ≈ 7.4σ: its share is ~0."""
    from ..metrics import far_outliers

    return float(far_outliers(x, reference.min(0), reference.max(0), margin).mean())


def evaluate(run, n: int = 5000, seed: int = 0, samples: np.ndarray | None = None, *,
             sampler_args: dict | None = None, nll: bool = False, nll_n: int = 500, log=None,
             progress=None) -> dict:
    """The metrics of a vector run as a dict: every distance beside its noise floor, and the
    share of far outliers (model samples vs a fresh true set). ``nll``: also :func:`nll_report`.
    ``progress``: of the sampling (``progress.py``)."""
    from ..metrics import compare

    refs, floors, toy, n = reference_sets(run, n, seed)
    if samples is None:
        samples = run.sample(n, seed, progress=progress, **(sampler_args or {})).samples
    samples = samples[:n].reshape(n, -1)
    flat = [r.reshape(n, -1) for r in refs], [f.reshape(n, -1) for f in floors]
    metrics = compare(samples, *flat, toy=toy)
    metrics["outlier_share"] = {"value": outlier_share(samples, flat[0][0]),
                                "floor": outlier_share(flat[1][0], flat[0][0])}
    report = {"kind": "vector", "run": str(run.path), "dataset": run.cfg.data.file or run.cfg.data.dataset,
              "n": n, "seed": seed, "step": run.step, "metrics": metrics}
    if nll:
        report["nll"] = nll_report(run, nll_n, seed)
    return report


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


def format_report(report: dict) -> str:
    lines = [f"run {report['run']}  dataset {report['dataset']}  step {report['step']}  n = {report['n']}",
             f"{'metric':<20}{'model':>14}{'noise floor':>14}{'ratio':>9}"]
    for name, row in report["metrics"].items():
        ratio = row["value"] / row["floor"] if row["floor"] not in (0, 0.0) else float("nan")
        shown = f"{ratio:9.2f}" if name in DISTANCE_ROWS else f"{'':>9}"
        lines.append(f"{name:<20}{row['value']:>14.5g}{row['floor']:>14.5g}{shown}")
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

"""Probability-flow ODE: sampling and likelihood speed on the default spiral run, torch
(``physdiff.ode``) against the SciPy baseline physdiff used before (solve_ivp RK45 on host NumPy,
the state copied at every evaluation, exact divergence by D backward passes), side by side.

    .venv/bin/python benchmarks/bench_ode.py [--run runs/spiral] [--n 2000] [--n-nll 500]

Without --run it trains the default spiral run first (about 1 min on 2 cores). Prints a table:
seconds (best of 5), NFE, bits/dim of the same 500 test points, sliced W2 of the samples against a fresh
true set, and the speed-up against the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from physdiff import ode
from physdiff.config import Config
from physdiff.evaluation.references import reference_sets
from physdiff.likelihood import nats_to_bits_per_dim
from physdiff.metrics import sliced_wasserstein
from physdiff.run import LoadedRun
from physdiff.schedule import continuous_time, log_sigma_bar
from physdiff.training import train


def scipy_rhs(model, sched, shape, prediction):
    """The baseline's right-hand side: f(u, x) with the fractional index from NumPy."""

    def rhs(u, x):
        ab = 1.0 / (1.0 + math.exp(2.0 * u))
        t = torch.full((shape[0],), float(continuous_time(sched, u)), dtype=x.dtype)
        out = model(x, t)
        if prediction == "eps":
            eps = out
        elif prediction == "v":
            eps = math.sqrt(1.0 - ab) * x + math.sqrt(ab) * out
        else:  # x0
            eps = (x - math.sqrt(ab) * out) / math.sqrt(1.0 - ab)
        return -(1.0 - ab) * x + math.sqrt(1.0 - ab) * eps

    return rhs


def scipy_sample(model, sched, x_T, prediction):
    from scipy.integrate import solve_ivp

    rhs, nfe = scipy_rhs(model, sched, x_T.shape, prediction), 0

    def f(s, y):
        nonlocal nfe
        nfe += 1
        return rhs(s, torch.from_numpy(y).reshape(x_T.shape)).reshape(-1).double().numpy()

    u = log_sigma_bar(sched)
    sol = solve_ivp(f, (u[-1], u[0]), x_T.reshape(-1).double().numpy(), method="RK45", rtol=1e-5, atol=1e-5)
    return torch.from_numpy(sol.y[:, -1]).reshape(x_T.shape), nfe


def scipy_log_likelihood(model, sched, x, prediction):
    from scipy.integrate import solve_ivp

    B, D = x.shape
    rhs, nfe = scipy_rhs(model, sched, x.shape, prediction), 0

    def f(u, y):
        nonlocal nfe
        nfe += 1
        with torch.enable_grad():
            xs = torch.from_numpy(y[: B * D]).reshape(x.shape).requires_grad_(True)
            dx = rhs(u, xs)
            div = torch.zeros(B, dtype=torch.float64)
            for j in range(D):
                div = div + torch.autograd.grad(dx[:, j].sum(), xs, retain_graph=j < D - 1)[0][:, j]
        return np.concatenate([dx.detach().reshape(-1).numpy(), div.numpy()])

    u = log_sigma_bar(sched)
    sol = solve_ivp(f, (u[0], u[-1]), np.concatenate([x.double().reshape(-1).numpy(), np.zeros(B)]),
                    method="RK45", rtol=1e-5, atol=1e-5)
    x_T = torch.from_numpy(sol.y[: B * D, -1]).reshape(B, D)
    return ode.standard_normal_log_prob(x_T) + torch.from_numpy(sol.y[B * D:, -1]), nfe


def timed(fn, repeats: int = 5):
    """(result, best wall time of ``repeats`` runs)."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run", default=None, help="a trained spiral run (default: train the default one)")
    p.add_argument("--n", type=int, default=2000, help="samples")
    p.add_argument("--n-nll", type=int, default=500, help="test points of the likelihood")
    args = p.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.run or train(Config().with_overrides({"train.device": "cpu"}), Path(tmp) / "spiral",
                                 progress=False)
        run = LoadedRun(path)
        refs, _, _, _ = reference_sets(run, args.n, 0, repeats=1)
        test, _, _, _ = reference_sets(run, args.n_nll, 7, repeats=1)
        z = run.normalizer.encode(torch.from_numpy(test[0]).double())
        jac = run.normalizer.log_abs_det_jacobian(run.data_shape)
        x_T = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        net, pred = run.denoiser, run.cfg.diffusion.prediction
        torch.from_numpy(np.zeros(1))  # warm-up of imports below
        ode.integrate(net, run.schedule, x_T[:8], direction="sample", prediction=pred, method="rk4", steps=2)
        rows = []
        (xs, nfe_s), ts = timed(lambda: scipy_sample(net, run.schedule, x_T, pred))
        (lp, nfe_l), tl = timed(lambda: scipy_log_likelihood(net, run.schedule, z, pred))
        rows.append(("SciPy RK45 1e-5 (baseline)", ts, nfe_s, tl, nfe_l, lp, xs))
        for label, kw in (("torch dopri5 1e-5", {"method": "dopri5"}),
                          ("torch rk4 18 steps", {"steps": 18}),
                          (f"torch rk4 {ode.default_steps(pred)} steps (default)", {})):
            res_s, ts = timed(lambda kw=kw: ode.integrate(net, run.schedule, x_T, direction="sample",
                                                          prediction=pred, **kw))
            res_l, tl = timed(lambda kw=kw: ode.log_likelihood(net, run.schedule, z, prediction=pred, **kw))
            rows.append((label, ts, res_s.nfe, tl, res_l.nfe, res_l.log_prob, res_s.x))
        base_s, base_l = rows[0][1], rows[0][3]
        print(f"spiral run ({pred}-prediction), {args.n} samples, likelihood of {args.n_nll} test points, 2 threads")
        print("| solver | sample s | NFE | speed-up | likelihood s | NFE | speed-up | bits/dim | sliced W2 |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for label, ts, ns, tl, nl, lp, xs in rows:
            bpd = nats_to_bits_per_dim(-float((lp + jac).mean()), 2)
            x = run.normalizer.decode(xs.double()).numpy()
            sw = sliced_wasserstein(x, refs[0])
            print(f"| {label} | {ts:.2f} | {ns} | {base_s / ts:.1f}× | {tl:.2f} | {nl} | {base_l / tl:.1f}× "
                  f"| {bpd:.5f} | {sw:.4f} |")


if __name__ == "__main__":
    main()

"""Cost of the exact divergence per configuration: the flattened ResMLP (autograd, L² backward
passes, width max(128, 2L²)) against the local network (model.arch = local, C(p² + 1) forward-mode
JVPs), both at the lattice defaults, untrained (the cost does not depend on the weights).
``local-torchfunc`` is the local network with its probes through torch.func's vmapped jvp (the
path of a subclass with its own ``local``, and the only one before the forward mode by hand):
the baseline of the hand-written forward mode, in the same run.

    .venv/bin/python benchmarks/bench_divergence.py [--sizes 8,16,32] [--batch 64] [--threads 2] \
        [--archs mlp,local,local-torchfunc]

Prints and writes benchmarks/divergence.json: seconds per configuration for one divergence
evaluation (the ODE with exact log q makes 4 per RK4 step), the median of --repeats runs, and
(``--proposals B``, default 32) seconds per proposal of the whole exact sampler step: the
probability-flow ODE with exact log q at the default steps, over a batch of B configurations.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from physdiff.config import config_from_dict
from physdiff.data.kinds import resolve_kind
from physdiff.nets import build_model
from physdiff.ode import network_divergence


@contextlib.contextmanager
def probes_through_torch_func(on: bool):
    """LocalNet's divergence through torch.func's vmapped jvp instead of its forward mode by hand."""
    from physdiff.nets.local import LocalNet

    real = LocalNet._forward_mode
    if on:
        LocalNet._forward_mode = lambda self, x, t, cond, p: self._vmapped_probes(x, t, cond, p)
    try:
        yield
    finally:
        LocalNet._forward_mode = real


def seconds_per_config(model, L, batch, repeats):
    x = torch.randn(batch, 1, L, L)
    t = torch.full((batch,), 300.0)
    with torch.no_grad():  # warm-up: the first call pays for allocations and kernel selection
        network_divergence(model, x[:2], t[:2])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            network_divergence(model, x, t)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] / batch


def seconds_per_proposal(model, L, batch, prediction):
    from physdiff.ode import sample_with_log_prob
    from physdiff.schedule import make_schedule

    x = torch.randn(batch, 1, L, L)
    t0 = time.perf_counter()
    sample_with_log_prob(model, make_schedule("linear", 1000), x, prediction=prediction)
    return (time.perf_counter() - t0) / batch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="8,16,32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--proposals", type=int, default=32, help="batch of the whole-proposal timing (0: skip)")
    p.add_argument("--archs", default="mlp,local", help="networks to time (the ResMLP is out of reach beyond L = 32)")
    p.add_argument("--out", default="benchmarks/divergence.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for L in (int(s) for s in args.sizes.split(",")):
        row = {}
        for arch in args.archs.split(","):
            base = arch.removesuffix("-torchfunc")
            cfg = config_from_dict({"data": {"dataset": "phi4"}, "theory": {"L": L}, "model": {"arch": base}})
            torch.manual_seed(0)
            model = build_model(cfg.model, (1, L, L), 0, resolve_kind(cfg.data), cfg.diffusion).eval()
            params = sum(q.numel() for q in model.parameters())
            with probes_through_torch_func(arch.endswith("-torchfunc")):
                row[arch] = {"seconds_per_config": seconds_per_config(model, L, args.batch, args.repeats),
                             "parameters": params}
                if args.proposals:
                    row[arch]["seconds_per_proposal"] = seconds_per_proposal(model, L, args.proposals,
                                                                             cfg.diffusion.prediction)
        rows[L] = row
        print(f"L = {L}: " + ", ".join(
            f"{arch} {r['seconds_per_config'] * 1e3:.3f} ms per configuration per divergence ({r['parameters']} "
            "params)" + (f", {r['seconds_per_proposal']:.3f} s per proposal with exact log q" if args.proposals else "")
            for arch, r in row.items()), flush=True)
    fits = {}
    for arch in args.archs.split(","):  # cost ∝ V^a: least squares in log-log over the sizes measured
        for key in ("seconds_per_config", "seconds_per_proposal"):
            pts = [(int(L) ** 2, r[arch][key]) for L, r in rows.items() if key in r.get(arch, {})]
            if len(pts) >= 2:
                a, _ = np.polyfit(np.log([v for v, _ in pts]), np.log([c for _, c in pts]), 1)
                fits[f"{arch}:{key}"] = float(a)
                print(f"{arch}: {key} ∝ V^{a:.2f} over L = {', '.join(str(L) for L in rows)}")
    rows["exponent_in_V"] = fits
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

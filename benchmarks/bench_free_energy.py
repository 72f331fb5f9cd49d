"""log Z by Monte Carlo's own estimators against the exact value and against each other, with the
CPU time each takes and the time it would take to reach σ(log Z) = 0.05 and 0.01 nats.

    .venv/bin/python benchmarks/bench_free_energy.py [--points ising:16:0.44,phi4:16:0.2705:0.022]
        [--methods ti,mbar,jarzynski] [--n 1600] [--trajectories 256] [--steps 400] [--grid 9]
        [--error 0.05] [--budget 900] [--threads 2] [--beside "nothing else running"]
        [--out benchmarks/free_energy.json]

With ``--error`` each method grows from the pilot (``--n``, ``--grid``, ``--trajectories``) until
σ(log Z) <= error or ``--budget`` seconds (``physdiff free-energy --error --budget``): the seconds to
that error are then measured, not extrapolated; the row's key ends in ``@σ=error``.

Each (point, method) runs once, alone (nothing else running: see the JSON's "beside"), through
``physdiff.lattice.free_energy.free_energy`` — the same call as ``physdiff free-energy``. The time
to a target error is extrapolated from the measured one as t · (σ / target)² (every estimator here
averages independent or Γ-corrected samples, so σ² falls as 1/cost at a fixed grid or protocol;
the quadrature error of ti and the bias of a short Jarzynski protocol do not, and are reported
beside it). Ising points have Kaufman's exact log Z; the bias is given in the method's own errors.
The exact sampler's rows come from its own benchmark JSON (bench_lattice.py), cited in
benchmarks/README.md with its training time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from physdiff.lattice.exact import free_field_log_z, ising_log_z
from physdiff.lattice.free_energy import free_energy

TARGETS = (0.05, 0.01)


def parse_point(text: str) -> tuple[str, int, dict]:
    """ising:L:beta or phi4:L:kappa:lam."""
    parts = text.split(":")
    if parts[0] == "ising":
        return "ising", int(parts[1]), {"beta": float(parts[2])}
    return "phi4", int(parts[1]), {"kappa": float(parts[2]), "lam": float(parts[3])}


def exact_log_z(model: str, L: int, values: dict) -> float | None:
    if model == "ising":
        return ising_log_z(L, values["beta"])
    if values.get("lam", 0.0) == 0.0:
        return free_field_log_z(L, values["kappa"])
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", default="ising:16:0.44")
    p.add_argument("--methods", default="ti,mbar,jarzynski")
    p.add_argument("--n", type=int, default=1600, help="configurations per grid point (ti, mbar)")
    p.add_argument("--trajectories", type=int, default=256)
    p.add_argument("--steps", type=int, default=400, help="jarzynski: coupling steps per trajectory")
    p.add_argument("--grid", type=int, default=9, help="ti, mbar: grid points (1 mod 4)")
    p.add_argument("--error", type=float, default=None, help="grow each estimate to this σ(log Z) (nats)")
    p.add_argument("--budget", type=float, default=None, help="seconds at most per estimate (with --error)")
    p.add_argument("--beside", default="nothing else running", help="what ran beside the benchmark")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/free_energy.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    print("| point | method | log Z | σ | exact | bias (σ) | s | s to σ=0.05 | s to σ=0.01 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for text in args.points.split(","):
        model, L, values = parse_point(text)
        exact = exact_log_z(model, L, values)
        for method in args.methods.split(","):
            n = args.trajectories if method == "jarzynski" else args.n
            t0 = time.perf_counter()
            r = free_energy(model, L, values, method, n=n, points=args.grid, steps=args.steps, seed=0, progress=False,
                            error=args.error, budget=args.budget)
            seconds = time.perf_counter() - t0
            lz = r["log_z"]
            row = {"point": text, "method": method, "n": n, "grid": args.grid, "steps": args.steps,
                   "threads": args.threads, "beside": args.beside, "cpu_count": os.cpu_count(),
                   "target_error": args.error, "budget": args.budget,
                   "seconds": seconds, "log_z": lz, "exact": exact,
                   "bias_in_errors": None if exact is None else (lz["value"] - exact) / lz["error"],
                   "seconds_to": {str(t): seconds * (lz["error"] / t) ** 2 for t in TARGETS},
                   "diagnostics": r["diagnostics"]}
            results[f"{text}/{method}" + ("" if args.error is None else f"@σ={args.error:g}")] = row
            out.write_text(json.dumps(results, indent=2, default=float) + "\n")
            bias = "—" if exact is None else f"{row['bias_in_errors']:+.1f}"
            print(f"| {text} | {method} | {lz['value']:.4f} | {lz['error']:.4f} | "
                  f"{'—' if exact is None else f'{exact:.4f}'} | {bias} | {seconds:.0f} | "
                  f"{row['seconds_to']['0.05']:.0f} | {row['seconds_to']['0.01']:.0f} |")
    if not math.isfinite(sum(r["seconds"] for r in results.values())):
        raise SystemExit("a non-finite time")


if __name__ == "__main__":
    main()

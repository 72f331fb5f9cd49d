"""Cost per effectively independent configuration of φ⁴ (λ = 0.022, κ = 0.2705) against L, from
the benchmark JSONs already written: HMC + Wolff and HMC alone (the reference runs of
bench_lattice.py: seconds × 2τ_int(|M|) / n) and diffusion-MH (seconds per proposal with exact
log q from one run of bench_divergence.py, both cores, the same code at every L, × 2τ_int(|M|) of
each L's own chain; training excluded, then included with the chain's n), with the exponent a of
cost ∝ V^a fitted over the sizes each column has.

    .venv/bin/python benchmarks/cost_table.py     # prints a markdown table
    .venv/bin/python benchmarks/cost_table.py --measure-hmc 32,64 --n 2000   # HMC alone where no chain has it
        # (benchmarks/hmc_only.json, 2 threads; the same seed and settings as bench_lattice.py's HMC-only runs)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
# the chain (and its reference runs) used at each L: file, key
CHAINS = {8: ("lattice.json", "phi4:8:0.2705+model.arch=local"),
          16: ("lattice_scale.json", "phi4:16:0.2705+model.arch=local"),
          32: ("lattice_scale.json", "phi4:32:0.2705"),
          64: ("lattice_scale.json", "phi4:64:0.2705")}
HMC_ONLY = {8: ("lattice.json", "phi4:8:0.2705"), 16: ("lattice_scale.json", "phi4:16:0.2705+model.arch=local")}


def cost(seconds, n, tau):
    return seconds * 2 * tau / n


def measure_hmc(sizes, n):
    """HMC alone (no cluster updates) at each L: seconds, n, τ_int(|M|), into hmc_only.json."""
    import torch

    from physdiff.lattice.action import Phi4
    from physdiff.lattice.mc import run_mcmc
    from physdiff.lattice.observables import as_table, measure

    torch.set_num_threads(2)
    out_path = HERE / "hmc_only.json"
    out = json.loads(out_path.read_text()) if out_path.is_file() else {}
    theory = Phi4(0.2705, 0.022)
    for L in sizes:
        t0 = time.perf_counter()
        x, rep = run_mcmc(theory, L, n, seed=102, chains=16, cluster=False)
        seconds = time.perf_counter() - t0
        tau = as_table(measure(x, theory, chains=16))["abs_m"]["tau_int"]
        out[str(L)] = {"seconds": seconds, "n": rep["n"], "tau_int_abs_m": tau}
        print(f"HMC alone, L = {L}: {seconds:.0f} s for {rep['n']} configurations, τ_int(|M|) = {tau:.2f}", flush=True)
        out_path.write_text(json.dumps(out, indent=2) + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--measure-hmc", default="", help="lattice sizes to run HMC alone at first, e.g. 32,64")
    p.add_argument("--n", type=int, default=2000, help="configurations of each --measure-hmc run")
    args = p.parse_args()
    if args.measure_hmc:
        measure_hmc([int(v) for v in args.measure_hmc.split(",")], args.n)
    measured = json.loads((HERE / "hmc_only.json").read_text()) if (HERE / "hmc_only.json").is_file() else {}
    per_proposal = {int(L): r["local"]["seconds_per_proposal"]
                    for L, r in json.loads((HERE / "divergence_local_2threads.json").read_text()).items()
                    if isinstance(r, dict) and "local" in r}
    rows = {}
    for L, (file, key) in CHAINS.items():
        path = HERE / file
        point = json.loads(path.read_text()).get(key) if path.is_file() else None
        if point is None:
            continue
        ref = point["reference"]
        n_ref = ref["report"]["n"]
        row = {"hmc_wolff": cost(ref["seconds"], n_ref, ref["observables"]["abs_m"]["tau_int"])}
        hmc_file, hmc_key = HMC_ONLY.get(L, (None, None))
        if str(L) in measured:
            h = measured[str(L)]
            row["hmc"] = cost(h["seconds"], h["n"], h["tau_int_abs_m"])
        elif hmc_file is not None:
            h = json.loads((HERE / hmc_file).read_text())[hmc_key]["hmc_only"]
            row["hmc"] = cost(h["seconds"], h["report"]["n"], h["observables"]["abs_m"]["tau_int"])
        d = point["diffusion"]
        seconds = per_proposal.get(L)
        if seconds is None:  # no side-by-side timing at this L: the chain's own (2 threads, alone)
            seconds = d["sample_seconds"] / d["n"]
        row["diffusion"] = seconds * 2 * d["tau_int_abs_m"]
        row["diffusion_training"] = (seconds * d["n"] + d["train_seconds"]) * 2 * d["tau_int_abs_m"] / d["n"]
        rows[L] = row
    cols = [("hmc", "HMC"), ("hmc_wolff", "HMC + Wolff"), ("diffusion", "diffusion-MH"),
            ("diffusion_training", "diffusion-MH with training")]
    print("| L | " + " | ".join(c for _, c in cols) + " |")
    print("| --- |" + " --- |" * len(cols))
    for L, row in rows.items():
        print(f"| {L} | " + " | ".join(f"{row[k] * 1e3:.3g} ms" if k in row else "–" for k, _ in cols) + " |")
    fits = []
    for k, c in cols:
        pts = [(L, row[k]) for L, row in rows.items() if k in row]
        if len(pts) >= 2:
            a, _ = np.polyfit(np.log([L * L for L, _ in pts]), np.log([y for _, y in pts]), 1)
            fits.append(f"{c} ∝ V^{a:.2f} (L = {', '.join(str(L) for L, _ in pts)})")
    print("\n" + "; ".join(fits))


if __name__ == "__main__":
    main()

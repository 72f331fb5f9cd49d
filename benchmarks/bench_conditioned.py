"""One coupling-conditioned model as the exact sampler of a whole κ scan, against the reference
Monte Carlo at every point, and the amortised cost.

    .venv/bin/python benchmarks/bench_conditioned.py [--L 8] [--range 0.26:0.28] [--lam 0.022]
        [--kappa 0.25,0.255,...] [--model-n 1000] [--n 4000] [--threads 1] [--run DIR]
        [--train KEY=VALUE ...] [--out benchmarks/conditioned.json] [--figures benchmarks]

1. `physdiff train --dataset phi4 --L 8 --kappa 0.26:0.28 --lam 0.022` at the defaults (its Monte
   Carlo training sets on the grid included in the time); an existing --run is reused.
2. `physdiff scan phi4 --L 8 --kappa ... --model RUN`: at every κ (inside the trained range and a
   little beyond it, where the model proposes at the nearest end) the reference HMC + Wolff
   ensemble and the model's exact sampler: raw and corrected observables with z, acceptance,
   ESS/N, log Z.
3. The amortised cost per effectively independent configuration (seconds × 2τ_int / n) for a scan
   of the k points inside the range: the reference's k runs against one training plus k samplings.
Results: benchmarks/conditioned.json, figures benchmarks/conditioned_scan_{model,observables}.png.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from bench_lattice import _value, cost  # --train values parsed, and seconds × 2τ_int / n, as bench_lattice does

from physdiff.config import load_config
from physdiff.lattice.scan import parse_values, scan_to_folder
from physdiff.run import LoadedRun
from physdiff.training import train


def hopping_derivative(scan_dir: Path, point: dict) -> dict:
    """d log Z/dκ = 2⟨Σ_{x,μ} φ_x φ_{x+μ̂}⟩ (hopping form of the action: −∂S/∂κ) from a scan
    point's Monte Carlo ensemble, with its Γ-method error (chains as replicas)."""
    from physdiff.lattice.ensemble import ensemble_chains, load_ensemble
    from physdiff.stats import gamma_method

    x, info = load_ensemble(scan_dir / point["ensemble"])
    h = 2 * sum((x * np.roll(x, 1, axis=ax)).sum(axis=(1, 2)) for ax in (1, 2))
    est = gamma_method(h.reshape(ensemble_chains(info), -1))
    return {"value": est.value, "error": est.error}


def thermodynamic_check(scan_dir: Path, rows: list[dict]) -> list[dict]:
    """log Z(b) − log Z(a) of neighbouring couplings from the model's chains (each its own run:
    errors in quadrature) against the Monte Carlo's ∫_a^b 2⟨Σ φ_x φ_{x+μ̂}⟩ dκ by the trapezoid
    rule (its error from the two ends; its discretisation error, h³/12 |f''|, estimated from the
    second difference of three neighbouring points where there are three)."""
    scan = json.loads((scan_dir / "scan.json").read_text())
    pts = sorted(scan["points"], key=lambda q: q["kappa"])
    deriv = [hopping_derivative(scan_dir, q) for q in pts]
    byk = {r["kappa"]: r for r in rows}
    out = []
    for i in range(len(pts) - 1):
        a, b = pts[i]["kappa"], pts[i + 1]["kappa"]
        za, zb = byk[a]["log_z"], byk[b]["log_z"]
        diff = zb["value"] - za["value"]
        diff_err = math.hypot(za["error"], zb["error"])
        h = b - a
        integral = 0.5 * h * (deriv[i]["value"] + deriv[i + 1]["value"])
        int_err = 0.5 * h * math.hypot(deriv[i]["error"], deriv[i + 1]["error"])
        curv = None
        if 0 < i:  # second difference of the derivative over three points (unequal spacing)
            k0, k1, k2 = pts[i - 1]["kappa"], a, b
            f0, f1, f2 = deriv[i - 1]["value"], deriv[i]["value"], deriv[i + 1]["value"]
            curv = 2 * ((f2 - f1) / (k2 - k1) - (f1 - f0) / (k1 - k0)) / (k2 - k0)
        trap = abs(curv) * h**3 / 12 if curv is not None else None
        err = math.hypot(diff_err, int_err)
        out.append({"kappa": [a, b], "log_z_difference_model": diff, "error_model": diff_err,
                    "mc_integral": integral, "error_mc": int_err, "trapezoid_error_estimate": trap,
                    "z": (diff - integral) / err if err else None})
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--L", type=int, default=8)
    p.add_argument("--range", default="0.26:0.28", help="the trained κ range LO:HI")
    p.add_argument("--lam", type=float, default=0.022)
    p.add_argument("--kappa", default="0.25,0.255,0.26,0.265,0.2705,0.275,0.28,0.285,0.29",
                   help="the scan's couplings (inside the range and a little beyond)")
    p.add_argument("--model-n", type=int, default=1000, help="proposals per point")
    p.add_argument("--n", type=int, default=4000, help="reference configurations per point")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run", default="/tmp/physdiff-bench/conditioned", help="run directory (reused if trained)")
    p.add_argument("--scan", default="/tmp/physdiff-bench/conditioned-scan", help="scan folder")
    p.add_argument("--train", nargs="*", default=[], metavar="KEY=VALUE", help="config values of the training, "
                   "e.g. train.steps=12000")
    p.add_argument("--out", default="benchmarks/conditioned.json")
    p.add_argument("--figures", default="benchmarks")
    p.add_argument("--analyse", action="store_true", help="only add the thermodynamic check to --out, from the "
                   "existing --scan folder (no training, no sampling)")
    args = p.parse_args()
    if args.analyse:
        result = json.loads(Path(args.out).read_text())
        result["thermodynamic_integration"] = thermodynamic_check(Path(args.scan), result["points"])
        Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")
        print_thermo(result["thermodynamic_integration"])
        return
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    lo, hi = (float(v) for v in args.range.split(":"))
    train_s = None
    if not (run / "ema.safetensors").is_file():
        run.parent.mkdir(parents=True, exist_ok=True)
        extra = {kv.split("=", 1)[0]: _value(kv.split("=", 1)[1]) for kv in args.train}  # config keys
        t0 = time.perf_counter()
        cfg = load_config(None, {"data.dataset": "phi4", "theory.L": args.L, "theory.kappa": [lo, hi],
                                 "theory.lam": args.lam, "train.device": "cpu", **extra})
        train(cfg, run, overwrite=True, progress=False)
        train_s = time.perf_counter() - t0
        (run / "bench_train_seconds.txt").write_text(f"{train_s}\n")
    elif (run / "bench_train_seconds.txt").is_file():
        train_s = float((run / "bench_train_seconds.txt").read_text())
    t0 = time.perf_counter()
    Path(args.scan).mkdir(parents=True, exist_ok=True)
    scan_to_folder("phi4", [args.L], "kappa", parse_values(args.kappa, "kappa"), {"lam": args.lam}, args.n,
                   Path(args.scan), overwrite=True, run=LoadedRun(run, device="cpu"), model_n=args.model_n,
                   progress=False)
    scan_s = time.perf_counter() - t0
    scan = json.loads((Path(args.scan) / "scan.json").read_text())
    rows, inside = [], []
    for pt in scan["points"]:
        k, m, obs = pt["kappa"], pt["model"], pt["observables"]
        worst = max(abs(v) for v in m["metropolis_z"].values() if v is not None)
        worst_raw = max(abs(v) for v in m["raw_z"].values() if v is not None)
        row = {"kappa": k, "inside": lo <= k <= hi, "conditioned_at": m.get("conditioned_at"),
               "acceptance": m["acceptance"], "ess_per_sample": m["ess_per_sample"],
               "ess_per_sample_error": m["ess_per_sample_error"], "tau_int_abs_m_chain": m["tau_int_abs_m_chain"],
               "largest_corrected_z": worst, "largest_raw_z": worst_raw,
               "corrected_z": m["metropolis_z"], "raw_z": m["raw_z"], "log_z": m["log_z"],
               "log_q_check_largest_shift": (m.get("log_q_check") or {}).get("largest_shift_in_errors"),
               "model_seconds": m["seconds"], "reference_seconds": pt["seconds"],
               "reference_tau_int_abs_m": obs["abs_m"].get("tau_int"), "reference_n": pt["n"]}
        row["cost_reference"] = cost(pt["seconds"], pt["n"], obs["abs_m"].get("tau_int") or 0.5)
        row["cost_diffusion_sampling"] = cost(m["seconds"], m["n"], m["tau_int_abs_m_chain"])
        rows.append(row)
        if row["inside"]:
            inside.append(row)
    k = len(inside)
    amortised = None
    if train_s is not None and k:
        ref_total = sum(r["reference_seconds"] for r in inside)
        diff_total = train_s + sum(r["model_seconds"] for r in inside)
        amortised = {
            "points": k, "train_seconds": train_s, "reference_seconds": ref_total,
            "diffusion_seconds": diff_total,
            "cost_reference_mean": sum(r["cost_reference"] for r in inside) / k,
            "cost_diffusion_sampling_mean": sum(r["cost_diffusion_sampling"] for r in inside) / k,
            "cost_diffusion_with_training_mean": sum(
                cost(r["model_seconds"] + train_s / k, args.model_n, r["tau_int_abs_m_chain"]) for r in inside) / k}
    result = {"L": args.L, "range": [lo, hi], "lam": args.lam, "model_n": args.model_n, "reference_n": args.n,
              "threads": args.threads, "train_seconds": train_s, "scan_seconds": scan_s,
              "run_config": (run / "config.toml").read_text(), "points": rows, "amortised": amortised,
              "binder_crossings": scan["binder_crossings"],
              "thermodynamic_integration": thermodynamic_check(Path(args.scan), rows)}
    Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")
    for name in ("scan_model", "scan_observables"):
        for ext in ("png", "csv"):
            src = Path(args.scan) / f"{name}.{ext}"
            if src.is_file():
                shutil.copy(src, Path(args.figures) / f"conditioned_{name}.{ext}")
    print(f"train {train_s} s, scan {scan_s:.0f} s")
    print("| κ | in range | proposes at | acceptance | ESS/N | τ_int(|M|) | largest |z| corrected | raw | log Z |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['kappa']:g} | {'yes' if r['inside'] else 'no'} | {r['conditioned_at']:g} | "
              f"{r['acceptance']:.3f} | "
              f"{r['ess_per_sample']:.3f} ± {r['ess_per_sample_error']:.3f} | {r['tau_int_abs_m_chain']:.2f} | "
              f"{r['largest_corrected_z']:.1f} | {r['largest_raw_z']:.1f} | {r['log_z']['value']:.4f} ± "
              f"{r['log_z']['error']:.4f} |")
    print("amortised:", json.dumps(amortised))
    print_thermo(result["thermodynamic_integration"])


def print_thermo(rows):
    print("| κ_a → κ_b | log Z(b) − log Z(a), model | ∫ 2⟨Σφφ⟩ dκ, Monte Carlo | trapezoid error | z |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        trap = "—" if r["trapezoid_error_estimate"] is None else f"{r['trapezoid_error_estimate']:.4f}"
        print(f"| {r['kappa'][0]:g} → {r['kappa'][1]:g} | {r['log_z_difference_model']:.4f} ± {r['error_model']:.4f} | "
              f"{r['mc_integral']:.4f} ± {r['error_mc']:.4f} | {trap} | {r['z']:+.2f} |")


if __name__ == "__main__":
    main()

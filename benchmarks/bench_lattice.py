"""Diffusion as an exact sampler of lattice φ⁴ (and a continuous model of Ising), against the
reference Monte Carlo, with Γ-method errors.

    .venv/bin/python benchmarks/bench_lattice.py [--points phi4:8:0.2705,ising:8:0.44] [--n 4000]
        [--device cpu|cuda] [--train KEY=VALUE ...] [--run DIR] [--steps N] [--figures DIR] [--out FILE]

Per point: the reference ensemble (HMC + Wolff for φ⁴, Wolff for Ising; physdiff mcmc), and an
HMC-only ensemble for φ⁴; `physdiff train --dataset ...` at the defaults (its Monte Carlo training
set included in the time); n ODE proposals with their exact log q; the independence Metropolis
chain and the importance weights. Prints raw and corrected observables with z-scores against the
reference, acceptance, ESS/N, τ_int of M and |M|, and the cost per effectively independent
configuration (seconds × 2τ_int / n) of each sampler. Results: benchmarks/lattice.json and
benchmarks/lattice_*.png.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from physdiff import LoadedRun, config_from_dict, train
from physdiff.checkpoint import save_figure
from physdiff.config import load_config
from physdiff.lattice import exact_sampler as es
from physdiff.lattice.action import Ising, Phi4
from physdiff.lattice.mc import run_mcmc
from physdiff.lattice.observables import SCALARS, as_table, compare, measure, primaries
from physdiff.plots import plot_configurations, plot_correlator, plot_lattice_histograms, plot_log_weights


def exact_log_z(theory, L):
    """log Z known in closed form: Kaufman's for Ising, the Gaussian integral for the free field."""
    from physdiff.lattice.exact import free_field_log_z, ising_log_z

    if isinstance(theory, Ising):
        return ising_log_z(L, theory.beta)
    if theory.lam == 0:
        return free_field_log_z(L, theory.kappa)
    return None


def z(a, b):
    err = math.hypot(a["error"], b["error"])
    return (a["value"] - b["value"]) / err if err else 0.0


def _value(text):
    """A command-line override value: int, float or string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def log_q_tolerance(run, n, seed=11):
    """Does the solver's tolerance matter for the exact sampler? log q of the same n proposals
    (same x_T) from the default RK4 steps, from twice the steps and from dopri5 at 1e-6: the spread
    (std) of their differences against the spread of the log-weights, and the Metropolis acceptance
    with each. A constant offset cancels in every ratio; only the spread can bias."""
    from physdiff import ode

    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, *run.data_shape, generator=g, dtype=torch.float64).to(run.device)
    pred, net = run.cfg.diffusion.prediction, run.denoiser
    steps = ode.default_steps(pred)
    out = {}
    for label, kw in ((f"rk4 {steps} (default)", {}), (f"rk4 {2 * steps}", {"steps": 2 * steps}),
                      ("dopri5 1e-6", {"method": "dopri5", "rtol": 1e-6, "atol": 1e-6})):
        res = ode.sample_with_log_prob(net, run.schedule, x_T, prediction=pred, **kw)
        out[label] = (res.x.cpu(), res.log_prob.cpu(), res.nfe)
    return out


def tolerance_table(theory, tol, normalizer):
    """Per solver: NFE, std of Δlog q against the default, std of the log-weights, acceptance."""
    rows, (x_ref, lq_ref, _) = {}, next(iter(tol.values()))
    for label, (x, lq, nfe) in tol.items():
        xd = normalizer.decode(x.double())[:, 0].cpu()
        lq_data = lq + normalizer.log_abs_det_jacobian(tuple(x.shape[1:]))  # data units, as run.sample
        log_w = -theory.action(xd).double() - lq_data
        _, info = es.metropolis_chain(theory, xd.numpy(), lq_data.numpy(), seed=0)
        rows[label] = {"nfe": nfe, "std_dlogq_vs_default": float((lq - lq_ref).std()),
                       "mean_dlogq_vs_default": float((lq - lq_ref).mean()),
                       "max_dx_vs_default": float((x - x_ref).abs().max()),
                       "std_log_w": float(log_w.std()), "acceptance": info["acceptance"]}
    return rows


def trained_run(path, theory, L, device):
    """A run trained before (``--run``): loaded, checked to be of ``theory`` at ``L``, with its
    training time from its provenance (the sessions' wall time, started to ended)."""
    from datetime import datetime

    run = LoadedRun(path, device=device)
    if run.theory.params != theory.params:
        raise SystemExit(f"--run {path} is {run.theory.params}, not the point's {theory.params}")
    if run.data_shape[-1] != L:  # the network trained at another size (LoadedRun.on_lattice)
        run = run.on_lattice(L)
    sessions = json.loads((Path(path) / "provenance.json").read_text())["sessions"]
    seconds = sum((datetime.fromisoformat(s["ended"]) - datetime.fromisoformat(s["started"])).total_seconds()
                  for s in sessions)
    return run, seconds


def cost(seconds, n, tau):
    """Seconds per effectively independent configuration: time × 2τ_int / n."""
    return seconds * 2 * tau / n


def retarget(run, theory, coupling: float, lam: float, L: int, args) -> dict:
    """The exact sampler of ``run`` (trained for ``theory``) aimed at the same theory at another
    coupling: corrected observables against that coupling's own Monte Carlo, log Z against the
    exact value where one is known, and log Z(other) − log Z(trained) from the one set of proposals."""
    other = Phi4(coupling, lam) if isinstance(theory, Phi4) else Ising(coupling)
    t0 = time.perf_counter()
    ref, _ = run_mcmc(other, L, args.n_ref, seed=103, chains=16)
    ref_obs = as_table(measure(ref, other, chains=16))
    ref_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact = es.sample_exact(run, args.n_retarget, 8, theory=other, chain_seed=1)
    sample_s = time.perf_counter() - t0
    info = exact.report
    mh = as_table(measure(exact.chain.astype(np.float64), other))
    out = {"params": other.params, "n": args.n_retarget, "reference_seconds": ref_s, "sample_seconds": sample_s,
           "reference": ref_obs, "metropolis": mh, "metropolis_z": compare(mh, ref_obs),
           "acceptance": info["acceptance"], "ess_per_sample": info["ess_per_sample"],
           "ess_per_sample_error": info["ess_per_sample_error"], "log_z": info["log_z"],
           "log_z_exact": exact_log_z(other, L),
           "free_energy_difference": es.free_energy_difference(exact, theory, getattr(run, "embedding", None))}
    exact_other, exact_own = out["log_z_exact"], exact_log_z(theory, L)
    if exact_other is not None and exact_own is not None:
        out["free_energy_difference"]["log_z_exact"] = exact_other - exact_own
    print(f"retarget {other.params}: acceptance {info['acceptance']:.3f}, ESS/N {info['ess_per_sample']:.3f}, "
          f"log Z {info['log_z']['value']:.4f} ± {info['log_z']['error']:.4f} (exact {exact_other}), "
          + ", ".join(f"{k} z = {v:+.1f}" for k, v in out["metropolis_z"].items() if v is not None), flush=True)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--points", default="phi4:8:0.2705")
    p.add_argument("--n", type=int, default=4000, help="diffusion proposals")
    p.add_argument("--n-ref", type=int, default=10_000, help="reference configurations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/lattice.json")
    p.add_argument("--figures", default="benchmarks", help="folder of the figures")
    p.add_argument("--device", default="cpu", help="device of training and sampling (the Monte Carlo runs on CPU)")
    p.add_argument("--train", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides of the diffusion run, e.g. train.steps=20000 model.mlp.width=256; "
                        "the point is then stored as POINT+KEY=VALUE...")
    p.add_argument("--run", default=None, metavar="DIR",
                   help="sample this trained run instead of training one (one point, which must be the run's theory; "
                        "at another L its network is carried over, LoadedRun.on_lattice); its training time is read "
                        "from its provenance")
    p.add_argument("--steps", type=int, default=None, help="RK4 steps of the exact sampler's ODE (default: its own)")
    p.add_argument("--no-hmc-only", action="store_true", help="skip the HMC-without-Wolff reference (φ⁴)")
    p.add_argument("--retarget", type=float, default=None, metavar="COUPLING",
                   help="also run the exact sampler of the same trained model against the theory at this κ or β "
                        "(a wrong model: still exact after Metropolis, at a lower ESS), with its own reference "
                        "Monte Carlo, exact log Z where known and the free-energy difference between the couplings")
    p.add_argument("--n-retarget", type=int, default=1000, help="proposals of the --retarget chain")
    p.add_argument("--tolerance", type=int, default=256,
                   help="proposals whose log q is recomputed at twice the steps and by dopri5 (0: skip)")
    args = p.parse_args()
    overrides = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.train)}
    Path(args.figures).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    results = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    for point in args.points.split(","):
        model, L, coupling = point.split(":")
        L, coupling = int(L), float(coupling)
        lam = 0.022 if model == "phi4" else 0.0
        theory = Phi4(coupling, lam) if model in ("phi4", "free") else Ising(coupling)
        model = "phi4" if model == "free" else model
        trained_L = load_config(Path(args.run) / "config.toml").theory["L"] if args.run else L  # no weights read
        key = "+".join([point, *args.train, *([f"steps={args.steps}"] if args.steps else []),
                        *([f"trained_L={trained_L}"] if trained_L != L else [])])
        data = {"dataset": model}
        theory_table = {"L": L} | ({"kappa": coupling, "lam": lam} if model == "phi4" else {"beta": coupling})
        row = {"params": theory.params, "L": L}
        t0 = time.perf_counter()
        ref, rep = run_mcmc(theory, L, args.n_ref, seed=101, chains=16)
        row["reference"] = {"seconds": time.perf_counter() - t0, "report": rep,
                            "observables": as_table(measure(ref, theory, chains=16))}
        if model == "phi4" and not args.no_hmc_only:
            t0 = time.perf_counter()
            hmc, rep_h = run_mcmc(theory, L, args.n_ref, seed=102, chains=16, cluster=False)
            row["hmc_only"] = {"seconds": time.perf_counter() - t0, "report": rep_h,
                               "observables": as_table(measure(hmc, theory, chains=16))}
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            if args.run:
                run, train_s = trained_run(args.run, theory, L, args.device)
            else:
                cfg = config_from_dict({"data": data, "theory": theory_table},
                                       {"train.device": args.device, **overrides})
                run = LoadedRun(train(cfg, Path(tmp) / "run", progress=False), device=args.device)
                train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            exact_path = theory.discrete is None or run.embedding is not None
            if exact_path:  # the exact sampler: ODE proposals with log q, action, Metropolis (Ising: embedded)
                exact = es.sample_exact(run, args.n, 7, theory=theory, chain_seed=0,
                                        **({} if args.steps is None else {"steps": args.steps}))
                x = exact.fields
            else:
                x = run.sample(args.n, 7, sampler="ode").samples[:, 0]
            sample_s = time.perf_counter() - t0
            tol = log_q_tolerance(run, args.tolerance) if model == "phi4" and args.tolerance else None
            if args.retarget is not None and exact_path:
                row["retarget"] = retarget(run, theory, args.retarget, lam, L, args)
        x = x.astype(np.float64)
        raw = as_table(measure(x, theory))
        row["diffusion"] = {"train_seconds": train_s, "sample_seconds": sample_s, "n": args.n, "raw": raw,
                            "raw_z": {k: z(raw[k], row["reference"]["observables"][k]) for k in SCALARS}}
        figs = {}
        if exact_path:
            chain, info = exact.chain.astype(np.float64), exact.report
            mh = as_table(measure(chain, theory))
            row["diffusion"] |= {"metropolis": mh, "metropolis_z": {k: z(mh[k], row["reference"]["observables"][k])
                                                                    for k in SCALARS},
                                 "acceptance": info["acceptance"], "ess_per_sample": info["ess_per_sample"],
                                 "ess_per_sample_error": info["ess_per_sample_error"],
                                 "tau_int_m": info["tau_int_m_chain"], "tau_int_abs_m": info["tau_int_abs_m_chain"],
                                 "log_z": info["log_z"], "log_z_raw": info.get("log_z_raw"),
                                 "log_z_refined": info.get("log_z_refined"),
                                 "log_z_exact": exact_log_z(theory, L),
                                 "embedding": info.get("embedding"), "log_q_check": info.get("log_q_check")}
            action = exact.action
            if tol is not None:
                row["diffusion"]["log_q_tolerance"] = tolerance_table(theory, tol, run.normalizer)
            figs["lattice_weights.png"] = plot_log_weights(action, exact.log_q,
                                                           f"{theory.label}, L = {L}: diffusion proposals")
        # cost per effectively independent configuration (τ in saved configurations)
        tau_ref = row["reference"]["observables"]["abs_m"]["tau_int"]
        row["cost_per_independent_s"] = {"reference": cost(row["reference"]["seconds"], args.n_ref, tau_ref)}
        if "hmc_only" in row:
            row["cost_per_independent_s"]["hmc_only"] = cost(row["hmc_only"]["seconds"], args.n_ref,
                                                             row["hmc_only"]["observables"]["abs_m"]["tau_int"])
        if exact_path:
            d = row["diffusion"]
            row["cost_per_independent_s"]["diffusion_mh_sampling"] = cost(sample_s, args.n, d["tau_int_abs_m"])
            row["cost_per_independent_s"]["diffusion_mh_with_training"] = cost(sample_s + train_s, args.n,
                                                                               d["tau_int_abs_m"])
        sets = {"Monte Carlo": ref[: args.n], "diffusion (raw)": x}
        if exact_path:
            sets["diffusion + Metropolis"] = chain
        figs["lattice_histograms.png"] = plot_lattice_histograms({k: primaries(v, theory) for k, v in sets.items()},
                                                                 theory.density_label, f"{theory.label}, L = {L}",
                                                                 discrete=theory.discrete is not None,
                                                                 reference="Monte Carlo")
        corr = {"Monte Carlo": row["reference"]["observables"]["G"], "diffusion (raw)": raw["G"]}
        if exact_path:
            corr["diffusion + Metropolis"] = row["diffusion"]["metropolis"]["G"]
        figs["lattice_correlator.png"] = plot_correlator(corr, f"{theory.label}, L = {L}")
        figs["lattice_configurations.png"] = plot_configurations(sets, title=f"{theory.label}, L = {L}")
        tag = f"lattice_{model}{L}_{coupling}_" + "".join(f"{kv.replace('=', '')}_" for kv in key.split("+")[1:])
        for name, fig in figs.items():
            save_figure(fig, Path(args.figures) / name.replace("lattice_", tag))
        row["config_overrides"] = overrides
        results[key] = row
        Path(args.out).write_text(json.dumps(results, indent=2, default=float))
        print(f"## {key}: train {train_s:.0f} s, {args.n} samples {sample_s:.0f} s")
        print("| observable | reference | raw | z | Metropolis | z |")
        print("| --- | --- | --- | --- | --- | --- |")
        for k in SCALARS:
            r, w = row["reference"]["observables"][k], raw[k]
            cells = f"| {k} | {r['value']:.4g} ± {r['error']:.2g} | {w['value']:.4g} ± {w['error']:.2g} | " \
                    f"{row['diffusion']['raw_z'][k]:+.1f} |"
            if exact_path:
                mh = row["diffusion"]["metropolis"][k]
                cells += f" {mh['value']:.4g} ± {mh['error']:.2g} | {row['diffusion']['metropolis_z'][k]:+.1f} |"
            else:
                cells += " – | – |"
            print(cells)
        if exact_path:
            d = row["diffusion"]
            lz, ex = d["log_z"], d["log_z_exact"]
            print(f"log Z {lz['value']:.4f} ± {lz['error']:.4f} (bootstrap {lz['bootstrap_error']:.4f})"
                  + (f", exact {ex:.4f}, z = {(lz['value'] - ex) / lz['error']:+.2f}" if ex is not None else "")
                  + (f"; {lz['warning']}" if "warning" in lz else ""))
            print(f"acceptance {d['acceptance']:.3f}, ESS/N {d['ess_per_sample']:.3f} ± "
                  f"{d['ess_per_sample_error']:.3f}, τ_int(M) {d['tau_int_m']:.2f}, "
                  f"τ_int(|M|) {d['tau_int_abs_m']:.2f}")
        chk = row["diffusion"].get("log_q_check")
        if chk:
            def e(v):
                return "n/a" if v["in_errors"] is None else f"{v['in_errors']:+.2f}"

            print(f"solver check on {chk['n']} proposals ({chk['check']} against {chk['solver']}): Δlog q "
                  f"{json.dumps(chk['dlog_q'])}; log Z shift {e(chk['log_z_shift'])} errors; "
                  + ", ".join(f"{k} {e(v)}" for k, v in chk["shifts"].items())
                  + (f"; WARNING {chk['warning']}" if "warning" in chk else ""))
            ref, exact_z = row["diffusion"].get("log_z_refined"), row["diffusion"].get("log_z_exact")
            if ref:
                print(f"log Z with the finer solve {ref['value']:.4f} ± {ref['error']:.4f}"
                      + (f", exact {exact_z:.4f}, z = {(ref['value'] - exact_z) / ref['error']:+.2f}"
                         if exact_z is not None else ""))
        for label, t in row["diffusion"].get("log_q_tolerance", {}).items():
            print(f"log q with {label}: {json.dumps(t)}")
        print("cost per independent configuration (s):", json.dumps(row["cost_per_independent_s"]), flush=True)


if __name__ == "__main__":
    main()

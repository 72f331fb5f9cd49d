"""The ``physdiff`` command: data | train | sample | encode | evaluate | plot | demo.

Bad input prints one line ``physdiff: error: ...`` and exits with status 2; outputs are
written atomically, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

from .errors import PhysdiffError

EPILOGS = {
    "data": "example:\n  physdiff data spiral --n 5000 --seed 0 --out spiral.npy",
    "train": ("examples:\n  physdiff train --dataset spiral --out runs/spiral\n"
              "  physdiff train --data my_points.npy --steps 20000 --out runs/mine\n"
              "  physdiff train --config spiral.toml --out runs/spiral2\n"
              "  physdiff train --resume --out runs/spiral --steps 12000"),
    "sample": ("examples:\n  physdiff sample runs/spiral --n 5000 --seed 1 --out samples.npy --trajectory traj.npy\n"
               "  physdiff sample runs/spiral --sampler ddim --steps 50 --eta 0 --out s.npy\n"
               "  physdiff sample runs/spiral --sampler dpm-solver --steps 20 --out s.npy"),
    "evaluate": ("examples:\n  physdiff evaluate runs/spiral --n 5000 --json\n"
                 "  physdiff evaluate runs/spiral --sampler dpm-solver --steps 20 --nll"),
    "plot": "example:\n  physdiff plot runs/spiral   # writes runs/spiral/{samples,forward,reverse,loss}.png",
    "encode": "example:\n  physdiff encode runs/spiral --data spiral.npy --steps 100 --out latents.npy",
    "demo": "example:\n  physdiff demo --out demo-out   # gaussian, two_gaussians, spiral: figures + metrics.md",
    "mcmc": ("examples:\n  physdiff mcmc phi4 --L 8 --kappa 0.2705 --lam 0.022 --n 10000 --seed 0 --out phi4.npy\n"
             "  physdiff mcmc ising --L 16 --beta 0.44 --n 10000 --seed 0 --out ising.npy"),
    "observables": ("examples:\n  physdiff observables phi4.npy\n"
                    "  physdiff observables model.npy --compare phi4.npy --plot figs/"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line and status 2 (no usage dump)."""

    def error(self, message):
        raise PhysdiffError(f"{message} (see `{self.prog} --help`)")


def _number(kind: type, lo=None):
    """argparse type: an int or a finite float, >= ``lo`` if given."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if lo is not None and value < lo:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {lo}")
        return value

    return parse


_positive_int, _nonneg_int, _finite_float = _number(int, 1), _number(int, 0), _number(float)
MAX_SEED = 2**63 - 1


def _seed(text: str) -> int:
    value = _nonneg_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r} must be <= 2**63 - 1")
    return value


def _config_type(flag: str, f):
    """argparse type of a config field: parsed by the field's type, checked by the field's own
    range and choices (config.py), the message naming the flag."""
    from .config import check_value, field_type

    kind = field_type(f)
    base = {int: _number(int), float: _number(float)}.get(kind, str)

    def parse(text: str):
        try:
            return check_value(flag, f, base(text))
        except PhysdiffError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _train_options() -> dict:
    """{option name: (config key, field)} of the config fields that declare a command-line name,
    sub-tables ([model.mlp], ...) included."""
    from dataclasses import MISSING, fields, is_dataclass

    from .config import SECTIONS

    out = {}

    def scan(prefix, cls):
        for f in fields(cls):
            if f.default is MISSING and is_dataclass(f.default_factory):
                scan(f"{prefix}.{f.name}", f.default_factory)
            elif f.metadata.get("cli"):
                out[f.metadata["cli"]] = (f"{prefix}.{f.name}", f)

    for section, cls in SECTIONS.items():
        scan(section, cls)
    return out


# flag → (config key, value it sets, help)
TRAIN_FLAGS = {
    "download": ("data.download", True, "mnist / fashion-mnist: fetch missing IDX files"),
    "unconditional": ("data.conditional", False, "ignore the dataset's class labels"),
    "compile": ("train.compile", True, "torch.compile the network (train.compile)"),
}
# command-line types of sampler options (their help comes from the sampler registry)
SAMPLER_OPTION_TYPES = {"steps": _positive_int, "eta": _finite_float, "spacing": str, "method": str,
                        "rtol": _finite_float, "atol": _finite_float}


def _npy_out(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".npy":
        raise PhysdiffError(f"--out {path!r} must end in .npy")
    if not out.parent.is_dir():
        raise PhysdiffError(f"folder {str(out.parent)!r} for {path!r} does not exist")
    return out


# ---------------------------------------------------------------- commands


def cmd_data(args) -> None:
    from .checkpoint import save_npy
    from .data import resolve_toy

    out = _new_output(_npy_out(args.out), args.overwrite)
    x = resolve_toy(args.name).sample(args.n, args.seed)
    save_npy(out, x)
    print(f"wrote {args.n} samples of {args.name!r} to {out}")


def cmd_train(args) -> None:
    from .config import load_config
    from .training import train

    options = _train_options()
    if isinstance(args.resume, str):
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise PhysdiffError(f"--resume {args.resume!r} and --out {args.out!r} name two runs; give one")
        args.out = args.resume
    if args.out is None:
        raise PhysdiffError("train needs a run directory: --out RUN (or --resume RUN to continue one)")
    if args.resume:
        given = [k for k in options if k != "steps" and getattr(args, k) is not None]
        if given or args.config or args.data or any(getattr(args, k) for k in TRAIN_FLAGS):
            extra = ", ".join("--" + k.replace("_", "-") for k in given) or "--config/--data"
            raise PhysdiffError(f"--resume continues a run with its own config.toml; drop {extra} "
                                "(only --steps may be given to extend it)")
        run = train(None, args.out, resume=True, steps=args.steps, progress=args.progress)
    else:
        overrides = {key: getattr(args, k) for k, (key, _) in options.items() if getattr(args, k) is not None}
        if args.data is not None:
            overrides["data.file"] = args.data
        overrides |= {key: value for k, (key, value, _) in TRAIN_FLAGS.items() if getattr(args, k)}
        cfg = load_config(args.config, overrides)
        run = train(cfg, args.out, overwrite=args.overwrite, progress=args.progress)
    print(f"trained run in {run} (weights: {run / 'ema.safetensors'})")


def _load(args):
    from .run import LoadedRun
    from .training import resolve_device

    return LoadedRun(args.run, weights=args.weights, device=resolve_device(args.device))


def cmd_sample(args) -> None:
    from . import dist
    from .training import resolve_device

    out = _npy_out(args.out)
    traj_out = _npy_out(args.trajectory) if args.trajectory else None
    logp_out = _npy_out(args.log_prob) if args.log_prob else None
    png_out = Path(args.png) if args.png else None
    if png_out is not None and (png_out.suffix.lower() != ".png" or not png_out.parent.is_dir()):
        raise PhysdiffError(f"--png {args.png!r} must end in .png, in an existing folder")
    _new_outputs(args.overwrite, out, traj_out, logp_out, png_out)
    # under torchrun each process draws a contiguous share of the indices; rank 0 writes them all
    device, created = dist.init(resolve_device(args.device))
    try:
        _sample_command(args, out, traj_out, logp_out, png_out, device)
    finally:
        dist.finish(created)


def _sample_command(args, out, traj_out, logp_out, png_out, device) -> None:
    import numpy as np
    import torch

    from . import dist
    from .checkpoint import save_npy
    from .run import LoadedRun

    run = LoadedRun(args.run, weights=args.weights, device=device)
    if run.kind.name == "lattice":
        from .lattice.ensemble import sidecar

        _new_output(sidecar(out), args.overwrite)  # the ensemble's parameters go beside it
    if png_out is not None and not run.is_image:
        raise PhysdiffError(f"--png needs an image run; this run's data have shape {run.data_shape}")
    if args.metropolis:
        _check_metropolis(run, args)
        args.sampler = "ode"  # the only sampler with an exact density
    sargs = _sampler_args(args, run)
    if logp_out is not None or args.metropolis:
        if sargs["sampler"] != "ode":
            raise PhysdiffError("--log-prob needs --sampler ode: only the probability-flow ODE has an exact density")
        sargs["log_prob"] = True
    nbytes = args.n * math.prod(run.data_shape) * 4
    streamable = not (traj_out or args.metropolis or png_out) and dist.world_size() == 1
    if streamable and nbytes > STREAM_BYTES:
        return _sample_streamed(args, run, sargs, out, logp_out, nbytes)
    _check_memory(nbytes * (3 if args.trajectory else 2), f"--n {args.n} samples")
    T = run.schedule.T
    steps = tuple(sorted({round(T * k / (args.snapshots - 1)) for k in range(args.snapshots)}, reverse=True))
    lo, hi = dist.shard(args.n)
    t0 = time.perf_counter()
    x, snaps = run.sample(hi - lo, args.seed, start=lo, batch_size=args.batch_size, classes=args.klass,
                          snapshot_steps=steps if traj_out else (), **sargs)
    kept = [k for k in steps if k in snaps]  # a respaced sampler visits only some steps
    traj = (np.stack([run.normalizer.decode(torch.from_numpy(snaps[k]).double()).numpy() for k in kept], axis=1)
            if traj_out else None)
    x = dist.gather_rows(x)
    traj = dist.gather_rows(traj) if traj_out else None
    logp = dist.gather_rows(run.last_log_prob) if (logp_out or args.metropolis) else None
    elapsed = time.perf_counter() - t0
    if not dist.is_main():
        return
    extra = ""
    if run.kind.name == "lattice":
        x = x[:, 0]  # (N, L, L): the ensemble format
        info = _lattice_info(run, args, sargs)
        if args.metropolis:
            from .lattice.exact_sampler import metropolis_chain

            x, mh = metropolis_chain(_lattice_theory(run), x, logp, args.seed)
            info |= mh
            extra = (f"; Metropolis acceptance {mh['acceptance']:.3f}, ESS/N {mh['ess_per_sample']:.3f} ± "
                     f"{mh['ess_per_sample_error']:.3f}")
        from .checkpoint import atomic_write_bytes
        from .lattice.ensemble import sidecar

        atomic_write_bytes(sidecar(out), (json.dumps(info, indent=2, default=float) + "\n").encode())
    save_npy(out, x)
    procs = f", {dist.world_size()} processes" if dist.world_size() > 1 else ""
    msg = (f"wrote {args.n} samples to {out} with {sargs['sampler'] or run.default_sampler()['sampler']} "
           f"(NFE {run.last_nfe} per batch; {elapsed:.1f} s, {args.n / elapsed:.0f} samples/s{procs})")
    if png_out is not None:
        from .data.images import save_png_grid

        save_png_grid(x, png_out)
        msg += f"; PNG grid {png_out}"
    if traj_out:
        traj = np.swapaxes(traj, 0, 1)  # (K, N, ...)
        save_npy(traj_out, traj)
        msg += f"; trajectory {traj.shape} at t = {kept} to {traj_out}"
    if logp_out:
        save_npy(logp_out, logp, dtype="float64")
        msg += f"; log-densities (nats, data units) to {logp_out}"
    print(msg + extra)


STREAM_BYTES = 256 * 2**20  # samples beyond this size are written to disk chunk by chunk


def _sample_streamed(args, run, sargs: dict, out: Path, logp_out: Path | None, nbytes: int) -> None:
    """Samples too large to hold twice in memory: drawn in chunks of indices (sample i depends
    only on (seed, i), so the file is the one an unchunked call would write) into memory maps
    that are renamed into place at the end; nothing is left behind on an error or interrupt."""
    import shutil

    from .checkpoint import npy_stream

    need = nbytes + (args.n * 8 if logp_out else 0)
    folders = {out.parent, *([logp_out.parent] if logp_out else [])}
    for folder in folders:
        free = shutil.disk_usage(folder).free
        if need > free:
            raise PhysdiffError(f"--n {args.n} samples need about {need / 2**30:.1f} GiB on disk but {str(folder)!r} "
                                f"has {free / 2**30:.1f} GiB free; ask for fewer or write elsewhere")
    shape = (args.n, *run.data_shape) if run.kind.name != "lattice" else (args.n, *run.data_shape[1:])
    chunk = max(1, STREAM_BYTES // (4 * math.prod(run.data_shape)))
    t0 = time.perf_counter()
    if run.kind.name == "lattice":
        from .checkpoint import atomic_write_bytes
        from .lattice.ensemble import sidecar

        info = _lattice_info(run, args, sargs)
    with contextlib.ExitStack() as stack:
        arr = stack.enter_context(npy_stream(out, shape))
        logp = stack.enter_context(npy_stream(logp_out, (args.n,), "float64")) if logp_out else None
        for lo in range(0, args.n, chunk):
            count = min(chunk, args.n - lo)
            x, _ = run.sample(count, args.seed, start=lo, batch_size=args.batch_size, classes=args.klass, **sargs)
            arr[lo:lo + count] = x[:, 0] if run.kind.name == "lattice" else x
            if logp is not None:
                logp[lo:lo + count] = run.last_log_prob
    if run.kind.name == "lattice":
        atomic_write_bytes(sidecar(out), (json.dumps(info, indent=2, default=float) + "\n").encode())
    elapsed = time.perf_counter() - t0
    name = sargs["sampler"] or run.default_sampler()["sampler"]
    extra = f"; log-densities (nats, data units) to {logp_out}" if logp_out else ""
    print(f"wrote {args.n} samples to {out} in chunks of {chunk} with {name} ({elapsed:.1f} s, "
          f"{args.n / elapsed:.0f} samples/s){extra}")


def _lattice_info(run, args, sargs) -> dict:
    """The JSON beside a lattice ensemble written by ``sample``."""
    return {"params": _lattice_theory(run).params, "generator": f"physdiff sample {args.run}", "chains": 1,
            "sampler": sargs}


def _lattice_theory(run):
    from .lattice.data import theory_of

    return theory_of(run.cfg.data)


def _check_metropolis(run, args) -> None:
    if run.kind.name != "lattice":
        raise PhysdiffError("--metropolis needs a lattice run (a theory with an action); this run's data are of kind "
                            f"{run.kind.name!r}")
    if run.cfg.data.dataset == "ising":
        raise PhysdiffError("--metropolis is not available for Ising runs: a continuous model read through the sign "
                            "of its samples has no density on ±1 spins; compare its raw observables with Wolff")


def _check_guidance(args, run) -> None:
    if args.guidance is not None and not run.num_classes:
        raise PhysdiffError("--guidance needs a class-conditional run; this run was trained without labels")


def _sampler_args(args, run) -> dict:
    """The sampler and its options as given on the command line, checked by the registry (which
    refuses an option the sampler does not take). No --sampler: the data kind's default."""
    from .samplers import check_options, get_sampler

    _check_guidance(args, run)
    given = {k: getattr(args, k) for k in SAMPLER_OPTION_TYPES if getattr(args, k, None) is not None}
    if args.sampler is None:
        defaults = run.default_sampler()
        name = defaults.pop("sampler")
        defaults.pop("guidance")
        given = defaults | given
    else:
        name = args.sampler
        get_sampler(name)
    try:
        options = check_options(name, given, run.schedule.T)
    except PhysdiffError as exc:
        raise PhysdiffError(f"--sampler {name}: {exc}") from None
    return {"sampler": name, "guidance": args.guidance} | options


def cmd_encode(args) -> None:
    from .checkpoint import save_npy
    from .data import load_array

    out = _new_output(_npy_out(args.out), args.overwrite)
    run = _load(args)
    x = load_array(args.data, min_rows=1)
    if tuple(x.shape[1:]) != run.data_shape:
        raise PhysdiffError(f"data of shape {x.shape[1:]} do not match the run's data shape {run.data_shape}")
    if args.steps is not None and not 1 <= args.steps <= run.schedule.T:
        raise PhysdiffError(f"--steps must be between 1 and T = {run.schedule.T}")
    z = run.encode(x, steps=args.steps)
    save_npy(out, z)
    print(f"wrote DDIM latents x_T of {len(x)} points to {out}")


def cmd_evaluate(args) -> None:
    from .evaluation import evaluate, format_report, write_report

    if args.n is not None and args.n < 2:
        raise PhysdiffError(f"--n {args.n} is too small for evaluate: distances need at least 2 samples")
    run = _load(args)
    if args.nll and run.is_image:
        raise PhysdiffError("--nll is available for vector data only, not yet for image runs")
    if args.nll and run.kind.name == "lattice":
        raise PhysdiffError("--nll is for vector data; for a lattice run, physdiff sample RUN --log-prob FILE writes "
                            "the exact log-density of every configuration (and --metropolis makes the chain exact)")
    report = evaluate(run, args.n, args.seed, sampler_args=_sampler_args(args, run), nll=args.nll,
                      nll_n=args.nll_n, log=lambda m: print(m, file=sys.stderr))
    write_report(run, report)
    print(json.dumps(report, indent=2) if args.json else format_report(report))


def cmd_plot(args) -> None:
    from .checkpoint import save_figure
    from .evaluation import figures

    run = _load(args)
    _check_guidance(args, run)
    for fname, fig in figures(run, args.n, args.seed, guidance=args.guidance).items():
        save_figure(fig, run.path / fname)
        print(f"wrote {run.path / fname}")


def _check_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating, a result that cannot fit in this machine's memory."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if nbytes > total:
        raise PhysdiffError(f"{what} need about {nbytes / 2**30:.1f} GiB, more than this machine's "
                            f"{total / 2**30:.1f} GiB of memory; ask for fewer (several files, or a smaller --n)")


def _new_output(path: Path, overwrite: bool) -> Path:
    """Refuse an output that is a folder, or that exists unless ``overwrite``."""
    if path.is_dir():
        raise PhysdiffError(f"output {str(path)!r} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise PhysdiffError(f"output {str(path)!r} already exists; add --overwrite to replace it")
    return path


def _new_outputs(overwrite: bool, *paths: Path | None) -> None:
    """:func:`_new_output` for each given path, and no path named twice by one command."""
    seen = set()
    for path in (p for p in paths if p is not None):
        _new_output(path, overwrite)
        if path.resolve() in seen:
            raise PhysdiffError(f"{str(path)!r} is named twice as an output; give each output its own file")
        seen.add(path.resolve())


def cmd_mcmc(args) -> None:
    from .lattice.ensemble import check_theory_params, save_ensemble, sidecar
    from .lattice.mc import run_mcmc

    out = _new_output(_npy_out(args.out), args.overwrite)
    _new_output(sidecar(out), args.overwrite)
    theory = check_theory_params(args.model, args.L, args.kappa, args.lam, args.beta)
    if args.n % args.chains:
        raise PhysdiffError(f"--n {args.n} must be a multiple of --chains {args.chains}")
    t0 = time.perf_counter()
    x, report = run_mcmc(theory, args.L, args.n, seed=args.seed, chains=args.chains, cluster=not args.no_cluster,
                         log=lambda m: print(m, file=sys.stderr))
    report["seconds"] = time.perf_counter() - t0
    save_ensemble(out, x, {"params": theory.params, "generator": "physdiff mcmc", **report})
    therm = report["thermalisation"]
    acc = f", HMC acceptance {report['hmc_acceptance']:.3f} (step {report['hmc_step']:.3f})" \
        if "hmc_acceptance" in report else ""
    from .lattice.observables import format_z

    verdict = "agree" if therm["agree"] else "DISAGREE" if therm.get("comparable", True) else \
        "cannot be compared (zero errors)"
    print(f"wrote {args.n} configurations ({args.chains} chains) to {out} and {sidecar(out)}{acc}; hot/cold starts "
          f"{verdict} (z = {format_z(therm['abs_m']['z'], '+.2f')} for |M|, "
          f"{format_z(therm['action_density']['z'], '+.2f')} for the action density); {report['seconds']:.1f} s")


def cmd_observables(args) -> None:
    from .lattice.ensemble import load_ensemble, theory_from_params
    from .lattice.observables import SCALARS, as_table, compare, format_z, measure

    if args.plot and not Path(args.plot).is_dir():
        raise PhysdiffError(f"--plot {args.plot!r} must be an existing folder")
    x, info = load_ensemble(args.ensemble)
    theory = theory_from_params(info["params"])
    table = as_table(measure(x, theory, chains=int(info.get("chains", 1))))
    result = {"ensemble": args.ensemble, "params": info["params"], "n": len(x), "observables": table}
    if args.compare:
        y, info_b = load_ensemble(args.compare)
        if y.shape[1:] != x.shape[1:] or info_b["params"] != info["params"]:
            raise PhysdiffError(f"--compare {args.compare!r}: lattice {y.shape[1:]} {info_b['params']} differs "
                                f"from {x.shape[1:]} {info['params']}")
        other = as_table(measure(y, theory, chains=int(info_b.get("chains", 1))))
        result["compare"] = {"ensemble": args.compare, "observables": other, "z": compare(table, other)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        head = f"{'observable':<16}{'value':>14}{'error':>11}{'τ_int':>8}"
        if args.compare:
            head += f"{'other':>14}{'error':>11}{'z':>7}"
        lines = [f"{args.ensemble}: {len(x)} configurations, {info['params']}", head]
        for k in SCALARS:
            row = table[k]
            line = f"{k:<16}{row['value']:>14.6g}{row['error']:>11.3g}{row['tau_int']:>8.2f}"
            if args.compare:
                o = result["compare"]["observables"][k]
                line += f"{o['value']:>14.6g}{o['error']:>11.3g}{format_z(result['compare']['z'][k], '>+7.2f')}"
            lines.append(line)
        lines.append("chi2 = V<M^2>; chi_connected = V(<M^2> - <|M|>^2); errors: Γ-method (Wolff 2004), τ_int in "
                     "measurements" + ("; z = difference / combined error (n/a: both errors 0, not comparable)"
                                       if args.compare else ""))
        print("\n".join(lines))
    if args.plot:
        _observable_figures(args, x, theory, result, y if args.compare else None)


def _observable_figures(args, x, theory, result, y) -> None:
    from .checkpoint import save_figure
    from .lattice.observables import primaries
    from .plots import plot_configurations, plot_correlator, plot_lattice_histograms

    folder = Path(args.plot)
    names = {Path(args.ensemble).stem: x} | ({Path(args.compare).stem: y} if y is not None else {})
    figs = {"histograms.png": plot_lattice_histograms({k: primaries(v, theory) for k, v in names.items()},
                                                      theory.density_label,
                                                      f"{theory.label}, L = {x.shape[-1]}"),
            "correlator.png": plot_correlator({Path(args.ensemble).stem: result["observables"]["G"]} | (
                {Path(args.compare).stem: result["compare"]["observables"]["G"]} if y is not None else {}),
                f"{theory.label}, L = {x.shape[-1]}: connected two-point function"),
            "configurations.png": plot_configurations(names,
                                                      title=f"{theory.label}, L = {x.shape[-1]}: configurations")}
    for fname, fig in figs.items():
        save_figure(fig, folder / fname)
        print(f"wrote {folder / fname}")


def cmd_demo(args) -> None:
    from .demo import run_demo

    if args.n < 2:
        raise PhysdiffError(f"--n {args.n} is too small for the demo: distances need at least 2 samples")
    table = run_demo(args.out, steps=args.steps, n=args.n, device=args.device, progress=args.progress,
                     overwrite=args.overwrite)
    print(f"wrote {table}")


# ---------------------------------------------------------------- parser


# one-line help of each command: all that `physdiff --help` needs, so it imports no torch
COMMANDS = {
    "data": "Write samples of a true toy distribution to a .npy file.",
    "train": "Train a model into a run directory.",
    "sample": "Draw samples from a trained run (data units) into a .npy file.",
    "evaluate": "Distances between model samples and fresh true samples, beside their noise floors.",
    "encode": "Deterministic DDIM inversion: data points to their latents x_T.",
    "plot": "Write the run's figures: samples vs data, forward and reverse process, loss.",
    "mcmc": "Reference Monte Carlo of a lattice theory: φ⁴ by HMC + Wolff clusters, Ising by Wolff.",
    "observables": "Lattice observables of an ensemble with Γ-method errors; --compare another ensemble.",
    "demo": "The course's tour: train gaussian, two_gaussians and spiral; figures and a metrics table.",
}


def version() -> str:
    """The installed distribution's version (importlib.metadata), else the package's ``__version__``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("physdiff")
    except PackageNotFoundError:
        from . import __version__

        return __version__


class _VersionAction(argparse.Action):
    """``--version``: looked up only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog} {version()}")
        parser.exit()


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The ``physdiff`` parser. Only the sub-commands in ``commands`` (default: all) get their full
    options, which need the config (and so torch); the others are listed with their one-line help.
    :func:`main` builds the one sub-command it is given, so ``physdiff --help`` stays cheap."""
    p = _Parser(prog="physdiff", description="Train, sample, evaluate and plot diffusion models (DDPM).",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        s = sub.add_parser(name, help=help_, description=help_, epilog=EPILOGS[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if commands is None or name in commands:
            BUILDERS[name](s)
    return p


def _data_options(s) -> None:
    from .data import TOY_DATASETS

    s.add_argument("name", metavar="NAME", help=f"one of: {', '.join(TOY_DATASETS)}")
    s.add_argument("--n", type=_positive_int, default=5000, help="number of samples (default 5000)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--out", required=True, help="output .npy, shape (N, 2)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    s.set_defaults(func=cmd_data)


def _train_parser_options(s) -> None:
    from .config import Config
    from .data import IMAGE_DATASETS, TOY_DATASETS

    defaults = Config()
    src = s.add_mutually_exclusive_group()
    src.add_argument("--dataset", help=f"toy dataset ({', '.join(TOY_DATASETS)}) or image set "
                     f"({', '.join(IMAGE_DATASETS)}); default {defaults.data.dataset}")
    src.add_argument("--data", metavar="FILE", help="your own (N, D) .npy or .csv file")
    s.add_argument("--out", metavar="RUN", help="run directory to create")
    s.add_argument("--config", metavar="FILE.toml", help="TOML config; options given here override it")
    s.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN",
                   help="continue a run from its last checkpoint: --resume RUN, or --resume --out RUN")
    s.add_argument("--overwrite", action="store_true", help="replace an existing run in RUN")
    for k, (_, _, help_) in TRAIN_FLAGS.items():
        s.add_argument("--" + k, action="store_true", help=help_)
    for k, (key, f) in _train_options().items():
        if k == "dataset":
            continue
        default = defaults
        for part in key.split("."):
            default = getattr(default, part)
        choices = f" {{{','.join(f.metadata['choices'])}}}" if f.metadata.get("choices") else ""
        doc = f.metadata.get("doc") or key
        flag = "--" + k.replace("_", "-")
        s.add_argument(flag, type=_config_type(flag, f), default=None, metavar=k.upper() + choices,
                       help=f"{key}: {doc} (default {default})".replace("%", "%%"))
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on when stderr is a terminal)")
    s.set_defaults(func=cmd_train)


def _run_options(s, n_default=5000, n_help=None) -> None:
    s.add_argument("run", metavar="RUN", help="run directory written by `physdiff train`")
    s.add_argument("--n", "--num-samples", dest="n", type=_positive_int, default=n_default,
                   help=(n_help or f"number of samples (default {n_default})")
                   + "; under torchrun write --num-samples")
    s.add_argument("--seed", type=_seed, default=0, help="sample i depends only on (seed, i)")
    s.add_argument("--weights", default="ema", help="ema (default) or model")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _sampler_options(s) -> None:
    from .samplers import SAMPLERS

    listing = "; ".join(f"{name}: {spec.summary}" for name, spec in SAMPLERS.items())
    s.add_argument("--sampler", default=None, metavar="{" + ",".join(SAMPLERS) + "}",
                   help=f"{listing} (default: the data kind's, ddpm; for images ddpm on 100 steps)")
    for name, typ in SAMPLER_OPTION_TYPES.items():
        takers = [s_ for s_, spec in SAMPLERS.items() if name in spec.options]
        doc = next(SAMPLERS[t].options[name] for t in takers)
        s.add_argument("--" + name, type=typ, default=None, help=f"{doc} ({', '.join(takers)})")
    s.add_argument("--guidance", type=_finite_float, default=None,
                   help="classifier-free guidance w for class-conditional runs (default 0.5)")


def _sample_options(s) -> None:
    _run_options(s)
    _sampler_options(s)
    s.add_argument("--out", required=True, help="output .npy, shape (N, *data_shape)")
    s.add_argument("--trajectory", metavar="FILE.npy", help="also save snapshots of the reverse process, (K, N, ...)")
    s.add_argument("--snapshots", type=_positive_int, default=11, help="K for --trajectory (default 11, ≥ 2)")
    s.add_argument("--batch-size", type=_positive_int, default=None,
                   help="samples per network batch (default 4096; 512 for images); results do not depend on it")
    s.add_argument("--class", dest="klass", type=_nonneg_int, default=None,
                   help="class-conditional runs: draw every sample of this class (default: i mod K)")
    s.add_argument("--png", metavar="FILE.png", help="image runs: also write the samples as a PNG grid")
    s.add_argument("--log-prob", metavar="FILE.npy",
                   help="with --sampler ode: also write log q of each sample (nats, data units), shape (N,)")
    s.add_argument("--metropolis", action="store_true",
                   help="lattice φ⁴ runs: an independence Metropolis-Hastings chain of ODE proposals accepted with "
                        "e^-S and their exact log q; acceptance, ESS and reweighted observables in the .json")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    s.set_defaults(func=cmd_sample)


def _evaluate_options(s) -> None:
    _run_options(s, None, "number of samples (default 5000; image runs: the size of the training split, "
                          "so the FCD compares with its floor)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--nll", action="store_true", help="also the variational bound and ODE log-likelihood")
    s.add_argument("--nll-n", type=_positive_int, default=500, help="test points for --nll (default 500)")
    _sampler_options(s)
    s.set_defaults(func=cmd_evaluate)


def _encode_options(s) -> None:
    s.add_argument("run", metavar="RUN")
    s.add_argument("--data", required=True, metavar="FILE", help=".npy or .csv of points in data units")
    s.add_argument("--out", required=True, help="output .npy of latents (standardised units)")
    s.add_argument("--steps", type=_positive_int, default=None, help="DDIM steps (default T)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    s.add_argument("--weights", default="ema")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_encode)


def _plot_options(s) -> None:
    _run_options(s, 3000)
    s.add_argument("--guidance", type=_finite_float, default=None, help="image runs: guidance w (default 0.5)")
    s.set_defaults(func=cmd_plot)


def _mcmc_options(s) -> None:
    s.add_argument("model", metavar="MODEL", help="phi4 or ising")
    s.add_argument("--L", type=_positive_int, required=True, help="lattice size L (L×L, periodic), >= 2")
    s.add_argument("--kappa", type=_finite_float, default=None, help="phi4: hopping parameter κ >= 0")
    s.add_argument("--lam", type=_finite_float, default=None, help="phi4: quartic coupling λ >= 0")
    s.add_argument("--beta", type=_finite_float, default=None, help="ising: inverse temperature β >= 0")
    s.add_argument("--n", type=_positive_int, default=10_000, help="configurations to save (default 10000)")
    s.add_argument("--chains", type=_positive_int, default=16, help="parallel chains, half hot and half cold")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--no-cluster", action="store_true", help="phi4: HMC only, no Wolff updates of the signs")
    s.add_argument("--out", required=True, help="output .npy (N, L, L); its parameters go to the .json beside it")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    s.set_defaults(func=cmd_mcmc)


def _observables_options(s) -> None:
    s.add_argument("ensemble", metavar="ENSEMBLE.npy", help="(N, L, L) with its .json of parameters beside it")
    s.add_argument("--compare", metavar="OTHER.npy", help="a second ensemble of the same theory")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--plot", metavar="DIR", help="write histograms.png, correlator.png, configurations.png to DIR")
    s.set_defaults(func=cmd_observables)


def _demo_options(s) -> None:
    from .config import Config

    s.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    s.add_argument("--steps", type=_positive_int, default=Config().train.steps)
    s.add_argument("--n", type=_positive_int, default=5000)
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier demo in the folder")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    s.set_defaults(func=cmd_demo)


# the options of each command, added only when the command is named (they import the library)
BUILDERS = {"data": _data_options, "train": _train_parser_options, "sample": _sample_options,
            "evaluate": _evaluate_options, "encode": _encode_options, "plot": _plot_options, "mcmc": _mcmc_options,
            "observables": _observables_options, "demo": _demo_options}


def _named_command(argv: list[str]) -> str | None:
    """The sub-command ``argv`` names: its first token that is not an option (the top-level
    options take no values), or None."""
    return next((tok for tok in argv if not tok.startswith("-")), None)


def _join_negative_numbers(argv: list[str]) -> list[str]:
    """``--lr -1e-3`` → ``--lr=-1e-3``: argparse reads a value that starts with '-' and is not a
    plain negative integer or decimal (an exponent) as an option; the value's own check then
    names it."""
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if tok.startswith("--") and "=" not in tok and nxt is not None and nxt.startswith("-") and len(nxt) > 1:
            try:
                float(nxt)
            except ValueError:
                pass
            else:
                out.append(f"{tok}={nxt}")
                i += 2
                continue
        out.append(tok)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"physdiff: warning: {message}", file=sys.stderr)

    old = warnings.showwarning
    warnings.showwarning = one_line_warning
    try:
        argv = _join_negative_numbers(sys.argv[1:] if argv is None else argv)
        args = build_parser([_named_command(argv)]).parse_args(argv)
        if getattr(args, "snapshots", 2) < 2 and getattr(args, "trajectory", None):
            raise PhysdiffError("--snapshots must be >= 2")
        args.func(args)
    except PhysdiffError as exc:
        message = " ".join(str(exc).splitlines())  # always one line
        print(f"physdiff: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # every write path: read-only folder, full disk, name too long, ...
        where = f" ({exc.filename!r})" if exc.filename else ""
        print(f"physdiff: error: cannot write or read a file{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("physdiff: error: out of memory; ask for fewer samples, a smaller batch or a smaller model",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("physdiff: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = old
    return 0


if __name__ == "__main__":
    sys.exit(main())

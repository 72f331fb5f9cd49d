"""The ``physdiff`` command: data | train | sample | encode | evaluate | plot | demo.

Bad input prints one line ``physdiff: error: ...`` and exits with status 2; outputs are
written atomically, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
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
    from .config import theory_fields

    return out | theory_fields()


# flag → (config key, value it sets, help)
TRAIN_FLAGS = {
    "download": ("data.download", True, "mnist / fashion-mnist: fetch missing IDX files"),
    "unconditional": ("data.conditional", False, "ignore the dataset's class labels"),
    "compile": ("train.compile", True, "torch.compile the network (train.compile)"),
}
# command-line types of sampler options (their help comes from the sampler registry)
SAMPLER_OPTION_TYPES = {"steps": _positive_int, "eta": _finite_float, "spacing": str, "method": str,
                        "rtol": _finite_float, "atol": _finite_float}


def _theories_with(param: str) -> str:
    from .lattice.theory import THEORIES

    return ", ".join(n for n, c in THEORIES.items() if param in c.parameters())


def _npy_out(path: str) -> Path:
    from .sampling import npy_output

    return npy_output(path)


def _new_output(path: Path, overwrite: bool) -> Path:
    from .sampling import new_output

    return new_output(path, overwrite)


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
    from .run import LoadedRun
    from .sampling import check_outputs, npy_output, write_samples
    from .training import resolve_device

    out = npy_output(args.out)
    traj_out = npy_output(args.trajectory, "--trajectory") if args.trajectory else None
    logp_out = npy_output(args.log_prob, "--log-prob") if args.log_prob else None
    png_out = Path(args.png) if args.png else None
    if png_out is not None and (png_out.suffix.lower() != ".png" or not png_out.parent.is_dir()):
        raise PhysdiffError(f"--png {args.png!r} must end in .png, in an existing folder")
    check_outputs(args.overwrite, out, traj_out, logp_out, png_out)
    # under torchrun each process draws a contiguous share of the indices; rank 0 writes them all
    device, created = dist.init(resolve_device(args.device))
    try:
        run = LoadedRun(args.run, weights=args.weights, device=device)
        msg = write_samples(run, args.n, args.seed, out, sampler=args.sampler, options=_sampler_options(args),
                            guidance=args.guidance, classes=args.klass, batch_size=args.batch_size,
                            log_prob_out=logp_out, trajectory_out=traj_out, snapshots=args.snapshots,
                            png_out=png_out, metropolis=args.metropolis, overwrite=args.overwrite,
                            generator=f"physdiff sample {args.run}")
    finally:
        dist.finish(created)
    if msg is not None:
        print(msg)


def _sampler_options(args) -> dict:
    return {k: getattr(args, k) for k in SAMPLER_OPTION_TYPES if getattr(args, k, None) is not None}


def _sampler_args(args, run) -> dict:
    """The sampler and its options as given on the command line (``sampling.resolve_sampler``)."""
    from .sampling import resolve_sampler

    return resolve_sampler(run, args.sampler, _sampler_options(args), guidance=args.guidance)


def _check_guidance(args, run) -> None:
    if args.guidance is not None and not run.num_classes:
        raise PhysdiffError("--guidance needs a class-conditional run; this run was trained without labels")


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
    if args.nll and run.theory is not None:
        raise PhysdiffError("--nll is for vector data; for a lattice run, physdiff sample RUN --log-prob FILE writes "
                            "the exact log-density of every configuration (and --metropolis makes the chain exact)")
    if args.nll and not run.kind.likelihood:
        raise PhysdiffError(f"--nll is available for vector data only, not yet for {run.kind.name} runs")
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


def cmd_mcmc(args) -> None:
    from .config import theory_fields
    from .lattice.ensemble import check_theory_params, sidecar
    from .lattice.report import make_ensemble

    out = _new_output(_npy_out(args.out), args.overwrite)
    _new_output(sidecar(out), args.overwrite)
    given = {key[7:]: getattr(args, k) for k, (key, _) in theory_fields().items()
             if k != "L" and getattr(args, k, None) is not None}
    theory = check_theory_params(args.model, args.L, given, prefix="--")
    print(make_ensemble(theory, args.L, args.n, out, seed=args.seed, chains=args.chains, cluster=not args.no_cluster,
                        log=lambda m: print(m, file=sys.stderr)))


def cmd_observables(args) -> None:
    from .checkpoint import save_figure
    from .lattice.report import format_observables, observable_figures, observables_report

    folder = Path(args.plot) if args.plot else None
    if folder is not None and not folder.is_dir():
        raise PhysdiffError(f"--plot {args.plot!r} must be an existing folder")
    result, data = observables_report(args.ensemble, args.compare)
    figs = observable_figures(result, data) if folder is not None else {}
    for fname in figs:  # figures follow the rule of every output: replaced only with --overwrite
        _new_output(folder / fname, args.overwrite)
    print(json.dumps(result, indent=2) if args.json else format_observables(result))
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


def build_parser() -> argparse.ArgumentParser:
    from .config import Config
    from .data import IMAGE_DATASETS, TOY_DATASETS

    defaults = Config()
    p = _Parser(prog="physdiff", description="Train, sample, evaluate and plot diffusion models (DDPM).",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def add(name, help_):
        return sub.add_parser(name, help=help_, description=help_, epilog=EPILOGS[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    s = add("data", "Write samples of a true toy distribution to a .npy file.")
    s.add_argument("name", metavar="NAME", help=f"one of: {', '.join(TOY_DATASETS)}")
    s.add_argument("--n", type=_positive_int, default=5000, help="number of samples (default 5000)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--out", required=True, help="output .npy, shape (N, 2)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    s.set_defaults(func=cmd_data)

    s = add("train", "Train a model into a run directory.")
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
        if key.startswith("theory."):
            default = f"{f.default}" if key == "theory.L" else f"{f.default} for {_theories_with(key[7:])}"
        else:
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

    def run_options(s, n_default=5000, n_help=None):
        s.add_argument("run", metavar="RUN", help="run directory written by `physdiff train`")
        s.add_argument("--n", "--num-samples", dest="n", type=_positive_int, default=n_default,
                       help=(n_help or f"number of samples (default {n_default})")
                       + "; under torchrun write --num-samples")
        s.add_argument("--seed", type=_seed, default=0, help="sample i depends only on (seed, i)")
        s.add_argument("--weights", default="ema", help="ema (default) or model")
        s.add_argument("--device", default="auto", help="auto, cpu or cuda")

    def sampler_options(s):
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

    s = add("sample", "Draw samples from a trained run (data units) into a .npy file.")
    run_options(s)
    sampler_options(s)
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

    s = add("evaluate", "Distances between model samples and fresh true samples, beside their noise floors.")
    run_options(s, None, "number of samples (default 5000; image runs: the size of the training split, "
                         "so the FCD compares with its floor)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--nll", action="store_true", help="also the variational bound and ODE log-likelihood")
    s.add_argument("--nll-n", type=_positive_int, default=500, help="test points for --nll (default 500)")
    sampler_options(s)
    s.set_defaults(func=cmd_evaluate)

    s = add("encode", "Deterministic DDIM inversion: data points to their latents x_T.")
    s.add_argument("run", metavar="RUN")
    s.add_argument("--data", required=True, metavar="FILE", help=".npy or .csv of points in data units")
    s.add_argument("--out", required=True, help="output .npy of latents (standardised units)")
    s.add_argument("--steps", type=_positive_int, default=None, help="DDIM steps (default T)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    s.add_argument("--weights", default="ema")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_encode)

    s = add("plot", "Write the run's figures: samples vs data, forward and reverse process, loss.")
    run_options(s, 3000)
    s.add_argument("--guidance", type=_finite_float, default=None, help="image runs: guidance w (default 0.5)")
    s.set_defaults(func=cmd_plot)

    s = add("mcmc", "Reference Monte Carlo of a lattice theory: φ⁴ by HMC + Wolff clusters, Ising by Wolff.")
    from .config import theory_fields
    from .lattice.theory import theory_names

    s.add_argument("model", metavar="MODEL", help=f"a lattice theory: {', '.join(theory_names())}")
    s.add_argument("--L", type=_positive_int, required=True, help="lattice size L (L×L, periodic), >= 2")
    for k, (key, f) in theory_fields().items():
        if k != "L":
            s.add_argument("--" + k, type=_finite_float, default=None,
                           help=f"{f.metadata['doc']} (default {f.default} for {_theories_with(key[7:])})")
    s.add_argument("--n", type=_positive_int, default=10_000, help="configurations to save (default 10000)")
    s.add_argument("--chains", type=_positive_int, default=16, help="parallel chains, half hot and half cold")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--no-cluster", action="store_true", help="phi4: HMC only, no Wolff updates of the signs")
    s.add_argument("--out", required=True, help="output .npy (N, L, L); its parameters go to the .json beside it")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    s.set_defaults(func=cmd_mcmc)

    s = add("observables", "Lattice observables of an ensemble with Γ-method errors; --compare another ensemble.")
    s.add_argument("ensemble", metavar="ENSEMBLE.npy", help="(N, L, L) with its .json of parameters beside it")
    s.add_argument("--compare", metavar="OTHER.npy", help="a second ensemble of the same theory")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--plot", metavar="DIR", help="write histograms.png, correlator.png, configurations.png to DIR")
    s.add_argument("--overwrite", action="store_true", help="replace existing figures in DIR")
    s.set_defaults(func=cmd_observables)

    s = add("demo", "The course's tour: train gaussian, two_gaussians and spiral; figures and a metrics table.")
    s.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    s.add_argument("--steps", type=_positive_int, default=defaults.train.steps)
    s.add_argument("--n", type=_positive_int, default=5000)
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier demo in the folder")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    s.set_defaults(func=cmd_demo)
    return p


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
        args = build_parser().parse_args(_join_negative_numbers(sys.argv[1:] if argv is None else argv))
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

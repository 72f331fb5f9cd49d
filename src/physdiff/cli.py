"""The ``physdiff`` command: data | train | sample | encode | evaluate | plot | demo | mcmc | observables.

Bad input prints one line ``physdiff: error: ...`` and exits with status 2; outputs are
written atomically, so a failed command leaves nothing half-written. Long jobs show their
progress on stderr (a bar on a terminal, a line every $PHYSDIFF_PROGRESS_INTERVAL seconds in a
log; ``-q`` for none, ``progress.py``); what they write records this command line
(``provenance.py``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from .arguments import (
    SAMPLER_OPTION_TYPES,
    TRAIN_FLAGS,
    _join_negative_numbers,
    _named_command,
    _train_options,
    build_parser,
)
from .errors import PhysdiffError


def _npy_out(path: str) -> Path:
    from .sampling import npy_output

    return npy_output(path)


def _new_output(path: Path, overwrite: bool) -> Path:
    from .sampling import new_output

    return new_output(path, overwrite)


def _progress(args) -> bool:
    """The command line shows progress (True, ``progress.py``) unless -q or --no-progress."""
    return not (getattr(args, "quiet", False) or getattr(args, "progress", None) is False)


def _log(args):
    """Where a command's notes go: stderr, or nowhere with -q."""
    if getattr(args, "quiet", False):
        return lambda message: None
    return lambda message: print(message, file=sys.stderr)


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
        run = train(None, args.out, resume=True, steps=args.steps, progress=_progress(args))
    else:
        overrides = {key: getattr(args, k) for k, (key, _) in options.items() if getattr(args, k) is not None}
        if args.data is not None:
            overrides["data.file"] = args.data
        overrides |= {key: value for k, (key, value, _) in TRAIN_FLAGS.items() if getattr(args, k)}
        cfg = load_config(args.config, overrides)
        run = train(cfg, args.out, overwrite=args.overwrite, progress=_progress(args))
    print(f"trained run in {run} (weights: {run / 'ema.safetensors'})")


def _load(args):
    from .run import LoadedRun
    from .training import resolve_device

    return LoadedRun(args.run, weights=args.weights, device=resolve_device(args.device))


def cmd_sample(args) -> None:
    import contextlib

    from . import dist
    from .checkpoint import lock_outputs
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
        # one writer per output (and its JSON) at a time
        with lock_outputs(out, traj_out, logp_out, png_out) if dist.is_main() else contextlib.nullcontext():
            msg = write_samples(run, args.n, args.seed, out, sampler=args.sampler,
                                options=_given_sampler_options(args), guidance=args.guidance, classes=args.klass,
                                batch_size=args.batch_size, log_prob_out=logp_out, trajectory_out=traj_out,
                                snapshots=args.snapshots, png_out=png_out, metropolis=args.metropolis,
                                burn_in=args.burn_in, overwrite=args.overwrite, generator=f"physdiff sample {args.run}",
                                progress=_progress(args))
    finally:
        dist.finish(created)
    if msg is not None:
        print(msg)


def _given_sampler_options(args) -> dict:
    return {k: getattr(args, k) for k in SAMPLER_OPTION_TYPES if getattr(args, k, None) is not None}


def _sampler_args(args, run) -> dict:
    """The sampler and its options as given on the command line (``sampling.resolve_sampler``)."""
    from .sampling import resolve_sampler

    return resolve_sampler(run, args.sampler, _given_sampler_options(args), guidance=args.guidance)


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
                      nll_n=args.nll_n, log=_log(args), progress=_progress(args))
    write_report(run, report)
    from .checkpoint import json_text

    print(json_text(report) if args.json else format_report(report))


def cmd_plot(args) -> None:
    from .checkpoint import save_figure
    from .evaluation import figures

    run = _load(args)
    _check_guidance(args, run)
    for fname, fig in figures(run, args.n, args.seed, guidance=args.guidance, progress=_progress(args)).items():
        save_figure(fig, run.path / fname)
        print(f"wrote {run.path / fname}")


def cmd_mcmc(args) -> None:
    from .checkpoint import OutputLock
    from .config import theory_fields
    from .lattice.ensemble import check_theory_params, sidecar
    from .lattice.report import make_ensemble

    out = _new_output(_npy_out(args.out), args.overwrite)
    _new_output(sidecar(out), args.overwrite)
    given = {key[7:]: getattr(args, k) for k, (key, _) in theory_fields().items()
             if k != "L" and getattr(args, k, None) is not None}
    theory = check_theory_params(args.model, args.L, given, prefix="--")
    with OutputLock(out):  # the ensemble and its JSON: one writer at a time
        _new_output(out, args.overwrite)  # again, now that no other process can be writing it
        print(make_ensemble(theory, args.L, args.n, out, seed=args.seed, chains=args.chains,
                            cluster=not args.no_cluster, log=_log(args), progress=_progress(args)))


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
    from .checkpoint import json_text

    print(json_text(result) if args.json else format_observables(result))
    for fname, fig in figs.items():
        save_figure(fig, folder / fname)
        print(f"wrote {folder / fname}")


def cmd_demo(args) -> None:
    from .demo import run_demo

    if args.n < 2:
        raise PhysdiffError(f"--n {args.n} is too small for the demo: distances need at least 2 samples")
    table = run_demo(args.out, steps=args.steps, n=args.n, device=args.device, progress=_progress(args),
                     overwrite=args.overwrite)
    print(f"wrote {table}")


def main(argv: list[str] | None = None) -> int:
    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"physdiff: warning: {message}", file=sys.stderr)

    old = warnings.showwarning
    warnings.showwarning = one_line_warning
    try:
        given = list(sys.argv[1:] if argv is None else argv)
        argv = _join_negative_numbers(given)
        args = build_parser([_named_command(argv)]).parse_args(argv)
        func = globals()[f"cmd_{args.command}"]
        if getattr(args, "snapshots", 2) < 2 and getattr(args, "trajectory", None):
            raise PhysdiffError("--snapshots must be >= 2")
        if _progress(args):
            from .progress import interval

            interval()  # a bad $PHYSDIFF_PROGRESS_INTERVAL is refused before any work
        from .provenance import command_line

        with command_line(given):
            func(args)
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

"""The ``physdiff`` command: each sub-command parses (``arguments.py``), calls one library
function, and prints.

Bad input prints one line ``physdiff: error: ...`` and exits with status 2; outputs are
written atomically, so a failed command leaves nothing half-written. Long jobs show their
progress on stderr (a bar on a terminal, a line every $PHYSDIFF_PROGRESS_INTERVAL seconds in a
log; ``-q`` for none, ``progress.py``); what they write records this command line
(``provenance.py``). ``--theory-file FILE`` (any number of times) loads a user's theories
before the command is parsed, so their parameters are options like φ⁴'s.
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
    theory_files,
)
from .errors import PhysdiffError
from .options import build_parser


def _progress(args) -> bool:
    """The command line shows progress (True, ``progress.py``) unless -q or --no-progress."""
    return not (getattr(args, "quiet", False) or getattr(args, "progress", None) is False)


def _log(args):
    """Where a command's notes go: stderr, or nowhere with -q."""
    if getattr(args, "quiet", False):
        return lambda message: None
    return lambda message: print(message, file=sys.stderr)


def _json_text(value) -> str:
    from .checkpoint import json_text

    return json_text(value)


def _given(args, names) -> dict:
    """{name: value} of the options ``names`` given on the command line."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _couplings(args) -> dict:
    """{parameter: value} of the theory parameters given (--kappa, --beta, ...; L aside)."""
    from .config import theory_fields

    return {k: v for k, v in _given(args, theory_fields()).items() if k != "L"}


# ---------------------------------------------------------------- commands


def cmd_data(args) -> None:
    from .checkpoint import new_output, npy_output, save_npy
    from .data import resolve_toy

    out = new_output(npy_output(args.out, "--out"), args.overwrite)
    save_npy(out, resolve_toy(args.name).sample(args.n, args.seed))
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
        run = train(load_config(args.config, overrides), args.out, overwrite=args.overwrite, progress=_progress(args))
    print(f"trained run in {run} (weights: {run / 'ema.safetensors'})")


def _loaded(path, args, device=None):
    from .devices import resolve_device
    from .run import LoadedRun

    return LoadedRun(path, weights=getattr(args, "weights", "ema"),
                     device=device if device is not None else resolve_device(args.device))


def _load(args, device=None, *, targets: bool = False):
    """The run of a command: a coupling-conditioned run at the coupling given (--kappa, ...;
    required for such a run). The other couplings given are refused unless ``targets`` (the
    target of a --metropolis chain, :func:`cmd_sample`). Returns (run, the other couplings)."""
    run = _loaded(args.run, args, device)
    given = _couplings(args)
    cond = run.conditioning
    if cond is not None:
        option = run.coupling_option()
        if option not in given:
            raise PhysdiffError(f"run {args.run!r} is conditioned on {cond.name} in [{cond.lo:g}, {cond.hi:g}]: give "
                                f"the coupling to use, --{option} VALUE")
        run = run.at(given.pop(option))
    if given and not targets:
        state = "not conditioned on a coupling" if cond is None else f"conditioned on {cond.name}"
        raise PhysdiffError(f"--{next(iter(given))} applies to a run conditioned on that coupling; run "
                            f"{args.run!r} is {state}")
    return run, given


def cmd_sample(args) -> None:
    import contextlib

    from . import dist
    from .checkpoint import check_outputs, lock_outputs, npy_output
    from .devices import resolve_device
    from .sampling import write_samples

    out = npy_output(args.out, "--out")
    traj_out = npy_output(args.trajectory, "--trajectory") if args.trajectory else None
    logp_out = npy_output(args.log_prob, "--log-prob") if args.log_prob else None
    png_out = Path(args.png) if args.png else None
    if png_out is not None and (png_out.suffix.lower() != ".png" or not png_out.parent.is_dir()):
        raise PhysdiffError(f"--png {args.png!r} must end in .png, in an existing folder")
    check_outputs(args.overwrite, out, traj_out, logp_out, png_out)
    # under torchrun each process draws a contiguous share of the indices; rank 0 writes them all
    device, created = dist.init(resolve_device(args.device))
    try:
        run, couplings = _load(args, device, targets=True)
        if args.spectrum_configurations is not None and args.L is None:
            raise PhysdiffError("--spectrum-configurations applies with --L (sampling another lattice size)")
        if args.L is not None and args.L != run.cfg.theory.get("L"):
            run = run.on_lattice(args.L, **({} if args.spectrum_configurations is None
                                            else {"configurations": args.spectrum_configurations}))
        target = None
        if couplings:  # the chain's target at other couplings than the run's
            names = ", ".join("--" + k for k in couplings)
            if not args.metropolis:
                raise PhysdiffError(f"{names} applies to --metropolis chains only (the target of the chain)")
            if run.theory is None:
                raise PhysdiffError(f"{names} needs a lattice run; this run's data are of kind {run.kind.name!r}")
            target = run.theory.with_values(couplings, run.cfg.theory["L"], prefix="--")
        generator = f"physdiff sample {args.run}" + ("" if args.L is None else f" --L {args.L}")
        # one writer per output (and its JSON) at a time
        with lock_outputs(out, traj_out, logp_out, png_out) if dist.is_main() else contextlib.nullcontext():
            msg = write_samples(run, args.n, args.seed, out, sampler=args.sampler,
                                options=_given(args, SAMPLER_OPTION_TYPES), guidance=args.guidance,
                                classes=args.klass, batch_size=args.batch_size, log_prob_out=logp_out,
                                trajectory_out=traj_out, snapshots=args.snapshots, png_out=png_out,
                                metropolis=args.metropolis, burn_in=args.burn_in, log_q_check=args.log_q_check,
                                theory=target, overwrite=args.overwrite, generator=generator,
                                progress=_progress(args))
    finally:
        dist.finish(created)
    if msg is not None:
        print(msg)


def _sampler_args(args, run) -> dict:
    """The sampler and its options as given on the command line (``sampling.resolve_sampler``)."""
    from .sampling import resolve_sampler

    return resolve_sampler(run, args.sampler, _given(args, SAMPLER_OPTION_TYPES), guidance=args.guidance)


def _check_guidance(args, run) -> None:
    if args.guidance is not None and not run.num_classes:
        raise PhysdiffError("--guidance needs a class-conditional run; this run was trained without labels")


def cmd_encode(args) -> None:
    from .checkpoint import new_output, npy_output, save_npy
    from .data import load_array

    out = new_output(npy_output(args.out, "--out"), args.overwrite)
    run, _ = _load(args)
    x = load_array(args.data, min_rows=1)
    save_npy(out, run.encode(x, steps=args.steps))
    print(f"wrote DDIM latents x_T of {len(x)} points to {out}")


def cmd_fit_steps(args) -> None:
    from .fitted_steps import FILE, fit_steps

    run, _ = _load(args)
    _check_guidance(args, run)
    fit = fit_steps(run, args.sampler, args.steps, order=args.order, variant=args.variant, n=args.n, seed=args.seed,
                    guidance=args.guidance, hops=args.hops, progress=_progress(args))
    print(fit.summary(args.sampler, args.n, run.path / FILE))


def cmd_distill(args) -> None:
    from .distill import FILE, distill_run

    run = _loaded(args.run, args)
    d = distill_run(run, args.steps, base=args.base, iterations=args.iterations, batch_size=args.batch_size,
                    lr=args.lr, seed=args.seed, progress=_progress(args))
    print(d.summary(run.path, run.path / FILE))


def cmd_evaluate(args) -> None:
    from .evaluation import evaluate, format_report, write_report

    if args.n is not None and args.n < 2:
        raise PhysdiffError(f"--n {args.n} is too small for evaluate: distances need at least 2 samples")
    run, _ = _load(args)
    if args.nll and run.theory is not None:
        raise PhysdiffError("--nll is for vector data; for a lattice run, physdiff sample RUN --log-prob FILE writes "
                            "the exact log-density of every configuration (and --metropolis makes the chain exact)")
    report = evaluate(run, args.n, args.seed, sampler_args=_sampler_args(args, run), nll=args.nll,
                      nll_n=args.nll_n, log=_log(args), progress=_progress(args))
    write_report(run, report)
    print(_json_text(report) if args.json else format_report(report))


def cmd_plot(args) -> None:
    from .checkpoint import figure_outputs, write_figures
    from .evaluation import figures

    run, _ = _load(args)
    _check_guidance(args, run)
    figs = figures(run, args.n, args.seed, guidance=args.guidance, progress=_progress(args))
    print("\n".join(write_figures(figure_outputs(figs, run.path, args.format, run.file_tag))))


def cmd_mcmc(args) -> None:
    from .lattice.ensemble import check_theory_params, ensemble_output
    from .lattice.report import mcmc_to_file

    out = ensemble_output(args.out)
    theory = check_theory_params(args.model, args.L, _couplings(args), prefix="--")
    print(mcmc_to_file(theory, args.L, args.n, out, resume=args.resume, overwrite=args.overwrite, seed=args.seed,
                       chains=args.chains, cluster=not args.no_cluster, log=_log(args), progress=_progress(args)))


def cmd_scan(args) -> None:
    from .lattice.scan import format_scan, plan_grid, scan_to_folder
    from .lattice.theory import get_theory

    sizes, parameter, values, fixed = plan_grid(args.model_name, args.L, _couplings(args), args.n, args.chains)
    run = _loaded(args.model, args) if args.model is not None else None
    result, lines = scan_to_folder(args.model_name, sizes, parameter, values, fixed, args.n, Path(args.out),
                                   fmt=args.format, overwrite=args.overwrite, run=run, seed=args.seed,
                                   chains=args.chains, cluster=not args.no_cluster, log=_log(args),
                                   progress=_progress(args), model_n=args.model_n, **_given(args, ["steps"]))
    print(_json_text(result) if args.json else format_scan(result, get_theory(args.model_name).symbol(parameter)))
    print("\n".join(lines), file=sys.stderr if args.json else sys.stdout)


def cmd_observables(args) -> None:
    from .checkpoint import check_figure_outputs, figure_outputs, write_figures
    from .lattice.export import check_exportable, export_ensemble, pyerrors_output
    from .lattice.report import format_observables, observable_figures, observables_report

    folder = Path(args.plot) if args.plot else None
    if folder is not None and not folder.is_dir():
        raise PhysdiffError(f"--plot {args.plot!r} must be an existing folder")
    export = pyerrors_output(args.pyerrors, args.overwrite) if args.pyerrors else None
    result, data = observables_report(args.ensemble, args.compare)
    outputs = figure_outputs(observable_figures(result, data), folder, args.format) if folder is not None else []
    check_figure_outputs(outputs, args.overwrite)
    if export is not None:  # refused before the table, not after it
        check_exportable(data["x"], data["chains"][0], f"ensemble {Path(args.ensemble).stem!r}", data["theory"])
    print(_json_text(result) if args.json else format_observables(result))
    for line in write_figures(outputs):
        print(line)
    if export is not None:
        msg = export_ensemble(export, data, result, Path(args.ensemble).stem, overwrite=args.overwrite)
        print(msg, file=sys.stderr if args.json else sys.stdout)


def cmd_free_energy(args) -> None:
    from .lattice.free_energy import format_free_energy, free_energy

    run = _loaded(args.run, args) if args.run is not None else None
    report = free_energy(args.model, args.L, _couplings(args), args.method, run=run, parameter=args.parameter,
                         n=args.n, points=args.points, steps=args.steps, seed=args.seed, cluster=not args.no_cluster,
                         error=args.error, budget=args.budget, progress=_progress(args))
    print(_json_text(report) if args.json else format_free_energy(report))


def cmd_demo(args) -> None:
    from .demo import run_demo

    if args.n < 2:
        raise PhysdiffError(f"--n {args.n} is too small for the demo: distances need at least 2 samples")
    table = run_demo(args.out, steps=args.steps, n=args.n, device=args.device, progress=_progress(args),
                     overwrite=args.overwrite)
    print(f"wrote {table}")


class _Terminated(KeyboardInterrupt):
    """A SIGTERM, raised where the command is, so that it ends as a Ctrl-C does: locks released and
    their files removed, temporaries deleted, a run's session recorded as interrupted."""


def _on_sigterm(signum, frame):
    raise _Terminated


def _catch_sigterm():
    """Make SIGTERM end the command through :class:`_Terminated` (in the main thread, and only where
    nobody else handles it); returns the handler to restore, or None."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def main(argv: list[str] | None = None) -> int:
    import signal

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"physdiff: warning: {message}", file=sys.stderr)

    old = warnings.showwarning
    warnings.showwarning = one_line_warning
    old_sigterm = _catch_sigterm()
    try:
        given = list(sys.argv[1:] if argv is None else argv)
        argv = _join_negative_numbers(given)
        command = _named_command(argv)
        if theory_files(argv):
            from .lattice.theory import load_theory_file

            for path in theory_files(argv):  # before the parser: their parameters become options
                load_theory_file(path)
        args = build_parser([command]).parse_args(argv)
        func = globals()[f"cmd_{args.command.replace('-', '_')}"]
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
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (_Terminated): everything held is released
        print(f"physdiff: {'terminated' if isinstance(exc, _Terminated) else 'interrupted'}", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(exc, _Terminated) else 130
    finally:
        warnings.showwarning = old
        if old_sigterm is not None:
            signal.signal(signal.SIGTERM, old_sigterm)
    return 0


if __name__ == "__main__":
    sys.exit(main())

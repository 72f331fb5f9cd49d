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
    """The run of `evaluate` and `plot`: a coupling-conditioned run at the coupling given
    (--kappa, ...; required for such a run, refused for any other)."""
    from .config import theory_fields
    from .run import LoadedRun
    from .training import resolve_device

    run = LoadedRun(args.run, weights=args.weights, device=resolve_device(args.device))
    run, option = _at_coupling(run, args)
    given = [k for k in theory_fields() if k not in ("L", option) and getattr(args, k, None) is not None]
    if given:
        cond = run.conditioning
        raise PhysdiffError(f"--{given[0]} applies to a run conditioned on that coupling; run {args.run!r} is "
                            + ("not conditioned on a coupling" if cond is None else f"conditioned on {cond.name}"))
    return run


def _at_coupling(run, args):
    """(the run at the coupling given on the command line, the option that gave it) for a
    coupling-conditioned run (its coupling is required: the one the network and the chain use,
    refused outside the trained range); (run, None) for any other."""
    from .config import theory_fields

    cond = getattr(run, "conditioning", None)
    if cond is None:
        return run, None
    option = next(k for k, (key, _) in theory_fields().items() if key == f"theory.{cond.name}")
    value = getattr(args, option, None)
    if value is None:
        raise PhysdiffError(f"run {args.run!r} is conditioned on {cond.name} in [{cond.lo:g}, {cond.hi:g}]: give the "
                            f"coupling to use, --{option} VALUE")
    return run.at(value), option


def _target_theory(run, args, skip: str | None = None):
    """The theory a --metropolis chain targets: the run's own, with the couplings given on the
    command line (--kappa, --beta, ...) replaced; None when none is given. ``skip``: an option
    that set a conditioned run's coupling (its theory is already the run's)."""
    from .config import theory_fields

    given = {k: getattr(args, k) for k in theory_fields()
             if k not in ("L", skip) and getattr(args, k, None) is not None}
    if not given:
        return None
    names = ", ".join("--" + k for k in given)
    if not args.metropolis:
        raise PhysdiffError(f"{names} applies to --metropolis chains only (the target of the chain)")
    if run.theory is None:
        raise PhysdiffError(f"{names} needs a lattice run; this run's data are of kind {run.kind.name!r}")
    own = {k: v for k, v in run.theory.params.items() if k != "model"}
    target = type(run.theory).from_values(own | given, prefix="--")
    target.validate(run.cfg.theory["L"])
    return target


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
        run, option = _at_coupling(run, args)
        if args.spectrum_configurations is not None and args.L is None:
            raise PhysdiffError("--spectrum-configurations applies with --L (sampling another lattice size)")
        if args.L is not None and args.L != run.cfg.theory.get("L"):
            run = run.on_lattice(args.L, **({} if args.spectrum_configurations is None
                                            else {"configurations": args.spectrum_configurations}))
        target = _target_theory(run, args, skip=option)
        generator = f"physdiff sample {args.run}" + ("" if args.L is None else f" --L {args.L}")
        # one writer per output (and its JSON) at a time
        with lock_outputs(out, traj_out, logp_out, png_out) if dist.is_main() else contextlib.nullcontext():
            msg = write_samples(run, args.n, args.seed, out, sampler=args.sampler,
                                options=_given_sampler_options(args), guidance=args.guidance, classes=args.klass,
                                batch_size=args.batch_size, log_prob_out=logp_out, trajectory_out=traj_out,
                                snapshots=args.snapshots, png_out=png_out, metropolis=args.metropolis,
                                burn_in=args.burn_in, log_q_check=args.log_q_check, theory=target,
                                overwrite=args.overwrite, generator=generator,
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


def cmd_fit_steps(args) -> None:
    run = _load(args)
    _check_guidance(args, run)
    fit = run.fit_steps(args.sampler, args.steps, order=args.order, variant=args.variant, n=args.n, seed=args.seed,
                        guidance=args.guidance, hops=args.hops, progress=_progress(args))
    from .fitted_steps import FILE

    where = run.path / FILE
    if fit.kept:
        print(f"fitted {args.steps} timesteps for {args.sampler}: error against {args.sampler} on "
              f"{fit.reference_steps} steps {fit.error_start:.3g} (logSNR-uniform) -> {fit.error_fitted:.3g} "
              f"({fit.improvement:.1f}x smaller, on {args.n} held-out x_T; {fit.evaluations} runs, "
              f"{fit.seconds:.0f} s); timesteps {','.join(map(str, fit.timesteps))} written to {where}; sample "
              "uses them when no --spacing is given")
    else:
        print(f"the fitted timesteps did not beat logSNR-uniform ones on the held-out x_T ({fit.error_fitted:.3g} "
              f"against {fit.error_start:.3g}); {where} records that, and sample keeps logSNR-uniform steps")


def _students_phrase(steps: list[int]) -> str:
    """'the student of 1 step', 'students of 1, 2 and 4 steps'."""
    if len(steps) == 1:
        return f"the student of {steps[0]} step{'s' if steps[0] != 1 else ''}"
    return f"students of {', '.join(map(str, steps[:-1]))} and {steps[-1]} steps"


def cmd_distill(args) -> None:
    from .run import LoadedRun
    from .training import resolve_device

    run = LoadedRun(args.run, weights=args.weights, device=resolve_device(args.device))
    d = run.distill(args.steps, base=args.base, iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed, progress=_progress(args))
    from .distill import FILE

    last = d.rounds[-1]
    print(f"distilled {d.base} DDIM steps of run {str(run.path)!r} in {len(d.rounds)} rounds of {d.iterations} "
          f"iterations ({d.seconds:.0f} s; last round's loss {last.loss_first:.3g} -> {last.loss_last:.3g}); "
          f"{_students_phrase(sorted(d.students))} written to {run.path / FILE}; sample with --sampler distilled "
          "--steps N")


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


def _figure_outputs(figs: dict, folder: Path, fmt: str, tag: str = "") -> list[tuple[Path, Path | None, object]]:
    """(figure path, CSV path or None, Figure) of each figure: its name's stem with the suffix of
    ``fmt``, and the CSV of the numbers drawn (``plots.figure_table``) beside it, same stem.
    ``tag`` (a conditioned run's coupling, ``LoadedRun.file_tag``) follows every stem but the
    training loss's, which is the same at every coupling."""
    from .plots import figure_table

    out = []
    for fname, fig in figs.items():
        stem = Path(fname).stem
        path = folder / f"{stem}{'' if stem == 'loss' else tag}.{fmt}"
        out.append((path, path.with_suffix(".csv") if figure_table(fig) else None, fig))
    return out


def _write_figures(outputs) -> None:
    """Each figure and its CSV written together (both or neither), and named on stdout."""
    from .checkpoint import bytes_writer, figure_bytes, write_together
    from .plots import figure_table, table_csv

    for path, csv_path, fig in outputs:
        files = [(path, bytes_writer(figure_bytes(fig, path.suffix[1:])))]
        if csv_path is not None:
            files.append((csv_path, bytes_writer(table_csv(figure_table(fig)).encode())))
        write_together(files)
        print(f"wrote {path}" + (f" and {csv_path}" if csv_path is not None else ""))


def cmd_plot(args) -> None:
    from .evaluation import figures

    run = _load(args)
    _check_guidance(args, run)
    _write_figures(_figure_outputs(figures(run, args.n, args.seed, guidance=args.guidance, progress=_progress(args)),
                                   run.path, args.format, run.file_tag))


def cmd_mcmc(args) -> None:
    from .checkpoint import OutputLock
    from .config import theory_fields
    from .lattice.ensemble import check_theory_params, written_files
    from .lattice.report import make_ensemble, resume_ensemble

    out = _ensemble_out(args.out)
    if args.resume and args.overwrite:
        raise PhysdiffError(f"--resume extends {args.out!r} and --overwrite would replace it; give one of them")
    if args.resume and not out.is_file():
        raise PhysdiffError(f"--resume: ensemble {args.out!r} does not exist; make it first (the same command "
                            "without --resume)")
    for path in [] if args.resume else written_files(out):
        _new_output(path, args.overwrite)
    given = {key[7:]: getattr(args, k) for k, (key, _) in theory_fields().items()
             if k != "L" and getattr(args, k, None) is not None}
    theory = check_theory_params(args.model, args.L, given, prefix="--")
    options = dict(seed=args.seed, chains=args.chains, cluster=not args.no_cluster, log=_log(args),
                   progress=_progress(args))
    with OutputLock(out):  # the ensemble, its JSON and its state: one writer at a time
        if args.resume:
            print(resume_ensemble(theory, args.L, args.n, out, **options))
            return
        for path in written_files(out):  # again, now that no other process can be writing them
            _new_output(path, args.overwrite)
        print(make_ensemble(theory, args.L, args.n, out, **options))


def cmd_scan(args) -> None:
    from .checkpoint import OutputLock, bytes_writer, json_text, write_together
    from .config import theory_fields
    from .lattice.scan import format_scan, parse_sizes, parse_values, run_scan, scan_figures, scan_rows
    from .lattice.theory import get_theory
    from .plots import table_csv

    cls = get_theory(args.model_name)
    own = cls.parameters()
    sizes = parse_sizes(args.L)
    given = {k: getattr(args, k) for k in theory_fields() if k != "L" and getattr(args, k, None) is not None}
    other = sorted(set(given) - set(own))
    if other:
        raise PhysdiffError(f"--{other[0]} is not a parameter of {args.model_name}; its parameters: "
                            + ", ".join("--" + k for k in own))
    grids = {k: parse_values(v, k) for k, v in given.items()}
    scanned = [k for k, v in grids.items() if len(v) > 1]
    if len(scanned) != 1:
        raise PhysdiffError(f"give exactly one parameter of {args.model_name} as a list or range to scan (got "
                            f"{len(scanned)}: {', '.join('--' + k for k in scanned) or 'none'}), e.g. --"
                            f"{next(iter(own))} 0.26:0.28:9")
    parameter = scanned[0]
    fixed = {k: v[0] for k, v in grids.items() if k != parameter}
    if args.n % args.chains:
        raise PhysdiffError(f"--n {args.n} must be a multiple of --chains {args.chains}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PhysdiffError(f"--out {args.out!r} exists and is not a folder")
    if not out.parent.is_dir():
        raise PhysdiffError(f"folder {str(out.parent)!r} for --out {args.out!r} does not exist")
    run = None
    if args.model is not None:
        from .run import LoadedRun
        from .sampling import check_metropolis
        from .training import resolve_device

        run = LoadedRun(args.model, device=resolve_device(args.device))
        if run.theory is None or run.theory.name != args.model_name:
            raise PhysdiffError(f"--model {args.model!r} is not a {args.model_name} run (its data: "
                                f"{run.theory.name if run.theory is not None else run.kind.name})")
        check_metropolis(run, None)
        if run.cfg.theory["L"] not in sizes:
            raise PhysdiffError(f"--model {args.model!r} was trained at L = {run.cfg.theory['L']}, which is not "
                                f"among --L {args.L}")
    outputs_of_scan = [out / name for name in ("scan.json", "scan.csv", f"scan_observables.{args.format}",
                                               "scan_observables.csv", f"scan_binder.{args.format}", "scan_binder.csv",
                                               f"scan_model.{args.format}", "scan_model.csv")]
    existing = [path for path in outputs_of_scan if path.exists()]
    if existing and not args.overwrite and not _is_scan_json(out / "scan.json"):
        raise PhysdiffError(f"{str(existing[0])!r} exists and was not written by physdiff scan; give --overwrite to "
                            "replace it, or scan into another --out folder")
    ode = {"steps": args.steps} if args.steps is not None else {}
    result = run_scan(args.model_name, sizes, parameter, grids[parameter], fixed, args.n, out, seed=args.seed,
                      chains=args.chains, cluster=not args.no_cluster, log=_log(args), progress=_progress(args),
                      run=run, model_n=args.model_n, **ode)
    figs = scan_figures(result, cls)
    outputs = _figure_outputs(figs, out, args.format)
    with OutputLock(out / "scan.json"):
        write_together([(out / "scan.csv", bytes_writer(table_csv(scan_rows(result)).encode())),
                        (out / "scan.json", bytes_writer((json_text(result) + "\n").encode()))])
        _write_figures(outputs)
    print(json_text(result) if args.json else format_scan(result, cls.symbol(parameter)))
    print(f"wrote {out / 'scan.json'} and {out / 'scan.csv'}", file=sys.stderr if args.json else sys.stdout)


def _is_scan_json(path: Path) -> bool:
    """Whether ``path`` is the scan.json of an earlier scan (whose outputs a new scan recomputes)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and {"points", "binder_crossings", "parameter"} <= set(data)


def _ensemble_out(path: str) -> Path:
    """--out of mcmc: NAME.npy (with NAME.json) or NAME.h5, in an existing folder."""
    from .lattice.ensemble import ENSEMBLE_SUFFIXES, import_h5py, is_hdf5

    out = Path(path)
    if out.suffix not in ENSEMBLE_SUFFIXES:  # exactly: NAME.NPY and NAME.npy would share the JSON NAME.json
        raise PhysdiffError(f"--out {path!r} must end in .npy or .h5 (lower case)")
    if not out.parent.is_dir():
        raise PhysdiffError(f"folder {str(out.parent)!r} for {path!r} does not exist")
    if is_hdf5(out):
        import_h5py()  # before the Monte Carlo, not after it
    return out


def cmd_observables(args) -> None:
    from .lattice.report import format_observables, observable_figures, observables_report

    folder = Path(args.plot) if args.plot else None
    if folder is not None and not folder.is_dir():
        raise PhysdiffError(f"--plot {args.plot!r} must be an existing folder")
    export = _pyerrors_output(args.pyerrors, args.overwrite) if args.pyerrors else None
    result, data = observables_report(args.ensemble, args.compare)
    outputs = _figure_outputs(observable_figures(result, data), folder, args.format) if folder is not None else []
    for path, csv_path, _ in outputs:  # figures follow the rule of every output: replaced only with --overwrite
        _new_output(path, args.overwrite)
        if csv_path is not None:
            _new_output(csv_path, args.overwrite)
    from .checkpoint import json_text

    print(json_text(result) if args.json else format_observables(result))
    _write_figures(outputs)
    if export is not None:
        from .checkpoint import OutputLock
        from .lattice.export import export_pyerrors

        with OutputLock(export):
            _new_output(export, args.overwrite)
            msg = export_pyerrors(export, data["x"], data["theory"], data["chains"][0],
                                  Path(args.ensemble).stem.replace("|", "_"), result["params"])
        print(msg, file=sys.stderr if args.json else sys.stdout)


def _pyerrors_output(path: str, overwrite: bool) -> Path:
    """--pyerrors OUT.json.gz: a new (or, with --overwrite, replaced) gzipped JSON in an existing
    folder, pyerrors installed."""
    from .lattice.export import import_pyerrors

    out = Path(path)
    if not out.name.endswith(".json.gz") or out.name == ".json.gz":
        raise PhysdiffError(f"--pyerrors {path!r} must end in .json.gz (pyerrors' gzipped JSON)")
    if not out.parent.is_dir():
        raise PhysdiffError(f"folder {str(out.parent)!r} for --pyerrors {path!r} does not exist")
    _new_output(out, overwrite)
    import_pyerrors()
    return out


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
    except KeyboardInterrupt:
        print("physdiff: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = old
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The options of each ``physdiff`` command (their types and checks: ``arguments.py``) and the
parser that holds them (:func:`build_parser`)."""

from __future__ import annotations

import argparse

from .arguments import (
    COMMANDS,
    EPILOGS,
    FIGURE_FORMATS,
    SAMPLER_OPTION_TYPES,
    THEORY_COMMANDS,
    TRAIN_FLAGS,
    _config_type,
    _coupling_type,
    _finite_float,
    _index_list,
    _nonneg_int,
    _Parser,
    _positive_int,
    _seed,
    _theories_with,
    _train_options,
    _VersionAction,
)
from .errors import PhysdiffError


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
            if name in THEORY_COMMANDS:
                s.add_argument("--theory-file", action="append", metavar="FILE",
                               help="a Python file that registers lattice theories of your own "
                                    "(@physdiff.lattice.register_theory); give it again to every command on their "
                                    "runs and ensembles (docs/guide/lattice.md)")
    return p


def _quiet_option(s) -> None:
    s.add_argument("-q", "--quiet", action="store_true",
                   help="no progress and no notes on stderr (warnings, errors and results still print); "
                        "otherwise progress shows as a bar on a terminal, or as a line every "
                        "$PHYSDIFF_PROGRESS_INTERVAL seconds (default 30) in a log")


def _data_options(s) -> None:
    from .data import TOY_DATASETS

    s.add_argument("name", metavar="NAME", help=f"one of: {', '.join(TOY_DATASETS)}")
    s.add_argument("--n", type=_positive_int, default=5000, help="number of samples (default 5000)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--out", required=True, help="output .npy, shape (N, 2)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _quiet_option(s)


def _train_parser_options(s) -> None:
    from .config import Config
    from .data import IMAGE_DATASETS, TOY_DATASETS
    from .lattice.theory import theory_names

    defaults = Config()
    src = s.add_mutually_exclusive_group()
    src.add_argument("--dataset", help=f"toy dataset ({', '.join(TOY_DATASETS)}), image set "
                     f"({', '.join(IMAGE_DATASETS)}) or lattice theory ({', '.join(theory_names())}; its "
                     f"parameters: --L and the theory's options below); default {defaults.data.dataset}")
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
        # a field with choices shows them as its metavar, once: "--schedule {linear,cosine,sigmoid}"
        metavar = f"{{{','.join(f.metadata['choices'])}}}" if f.metadata.get("choices") else k.upper()
        if not f.metadata.get("doc"):
            raise PhysdiffError(f"config field {key} has a command-line option but no doc")  # a developer's slip
        flag = "--" + k.replace("_", "-")
        ranged = key.startswith("theory.") and key != "theory.L"
        s.add_argument(flag, type=(_coupling_type if ranged else _config_type)(flag, f), default=None,
                       metavar=metavar,
                       help=(f"{key}: {f.metadata['doc']} (default {default if default != '' else 'none'})"
                             + ("; LO:HI trains one model for the range (coupling-conditioned)" if ranged else ""))
                       .replace("%", "%%"))
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress: a bar on a terminal, a line every $PHYSDIFF_PROGRESS_INTERVAL seconds (default 30) "
                        "in a log (default on; --no-progress or -q: none)")
    _quiet_option(s)


def _run_options(s, n_default=5000, n_help=None) -> None:
    s.add_argument("run", metavar="RUN", help="run directory written by `physdiff train`")
    s.add_argument("--n", "--num-samples", dest="n", type=_positive_int, default=n_default,
                   help=(n_help or f"number of samples (default {n_default})")
                   + "; under torchrun write --num-samples")
    s.add_argument("--seed", type=_seed, default=0, help="sample i depends only on (seed, i)")
    s.add_argument("--weights", default="ema", help="ema (default) or model")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _sampler_options(s) -> None:
    from . import distill  # noqa: F401  (registers the distilled sampler)
    from .samplers import SAMPLERS

    listing = "; ".join(f"{name}: {spec.summary}" for name, spec in SAMPLERS.items())
    s.add_argument("--sampler", default=None, metavar="{" + ",".join(SAMPLERS) + "}",
                   help=f"{listing} (default: the data kind's, ddpm; for images ddpm on 100 steps)")
    for name, typ in SAMPLER_OPTION_TYPES.items():
        takers = [s_ for s_, spec in SAMPLERS.items() if name in spec.options]
        docs = list(dict.fromkeys(SAMPLERS[t].options[name] for t in takers))  # one per meaning
        s.add_argument("--" + name, type=typ, default=None, help=f"{'; '.join(docs)} ({', '.join(takers)})")
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
                   help="lattice runs (φ⁴; Ising through its embedding): an independence Metropolis-Hastings chain of "
                        "ODE proposals accepted with e^-S and their exact log q; acceptance, ESS, reweighted "
                        "observables, log Z and the solver check (log_q_check) in the .json")
    s.add_argument("--burn-in", type=_nonneg_int, default=None, metavar="B",
                   help="with --metropolis: chain steps run and discarded before the N kept ones (B more proposals "
                        "are drawn; default max(10, N // 20))")
    from .config import theory_fields

    for k, (key, f) in theory_fields().items():
        if k != "L":
            s.add_argument("--" + k, type=_finite_float, default=None,
                           help=f"with --metropolis: {f.metadata['doc']} of the target (default: the run's own; "
                                f"{_theories_with(key[7:])}); the model then proposes for another coupling, and "
                                "the JSON adds log Z and f of the target minus the run's own. A run conditioned on "
                                "this coupling (trained with LO:HI): the coupling to sample, within its range "
                                "(required)")
    s.add_argument("--L", type=_positive_int, default=None, metavar="N",
                   help="lattice runs with the local network (model.arch = local): sample an N×N lattice instead of "
                        "the run's own; the network carries over, the Gaussian part's spectrum is measured from "
                        "--spectrum-configurations Monte Carlo configurations at N; --metropolis stays exact")
    s.add_argument("--spectrum-configurations", type=_positive_int, default=None, metavar="K",
                   help="with --L: Monte Carlo configurations that measure the power spectrum at the new size "
                        "(default 1024, >= 32; cached)")
    s.add_argument("--log-q-check", type=_nonneg_int, default=None, metavar="K",
                   help="with --metropolis: K proposals integrated again with twice the ODE steps, to report how "
                        "far the solver's error in log q moves log Z and each reweighted observable (in errors; "
                        "default 5%% of the proposals, at least 16; 0 = off)")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _quiet_option(s)


def _evaluate_options(s) -> None:
    _run_options(s, None, "number of samples (default 5000; image runs: the size of the training split, "
                          "so the FCD compares with its floor)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--nll", action="store_true", help="also the variational bound and ODE log-likelihood")
    s.add_argument("--nll-n", type=_positive_int, default=500, help="test points for --nll (default 500)")
    _sampler_options(s)
    _coupling_options(s, "evaluate")
    _quiet_option(s)


def _coupling_options(s, what: str) -> None:
    """--kappa, --beta, ...: the coupling a coupling-conditioned run is used at."""
    from .config import theory_fields

    for k, (key, f) in theory_fields().items():
        if k != "L":
            s.add_argument("--" + k, type=_finite_float, default=None,
                           help=f"a run conditioned on {key[7:]} (trained with --{k} LO:HI): the {f.metadata['doc']} "
                                f"to {what} at, within its trained range (required for such a run)")


def _encode_options(s) -> None:
    s.add_argument("run", metavar="RUN")
    s.add_argument("--data", required=True, metavar="FILE", help=".npy or .csv of points in data units")
    s.add_argument("--out", required=True, help="output .npy of latents (standardised units)")
    s.add_argument("--steps", type=_positive_int, default=None, help="DDIM steps (default T)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    s.add_argument("--weights", default="ema")
    s.add_argument("--device", default="auto")
    _coupling_options(s, "encode")
    _quiet_option(s)


def _format_option(s) -> None:
    s.add_argument("--format", choices=FIGURE_FORMATS, default="png",
                   help="file format of the figures: png (default), pdf or svg (vector, for a paper); the "
                   "numbers drawn in each figure (histogram bins, correlators, points, loss) go to a .csv of the same "
                   "name beside it")


def _fit_steps_options(s) -> None:
    from .fitted_steps import FITTABLE, REFERENCE_STEPS

    s.add_argument("run", metavar="RUN", help="run directory written by `physdiff train`")
    s.add_argument("--sampler", default="unipc", choices=FITTABLE,
                   help="the deterministic sampler whose steps are fitted (default unipc; ddim with eta 0)")
    s.add_argument("--steps", type=_positive_int, default=10,
                   help=f"its network evaluations, from 3 to fewer than {REFERENCE_STEPS} and the run's T (default 10)")
    s.add_argument("--order", type=_positive_int, default=None, help="dpm-solver / unipc order (default the sampler's)")
    s.add_argument("--variant", default=None, help="dpm-solver order 3: reference or taylor; unipc: bh1 or bh2")
    s.add_argument("--n", type=_positive_int, default=1024,
                   help="draws of x_T to fit on, and as many more to check the fit on (default 1024, >= 64)")
    s.add_argument("--hops", type=_nonneg_int, default=None,
                   help="restarts of the search from random moves of the best steps (default 6; each costs about "
                   "as much as the first search, which grows as steps squared)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--guidance", type=_finite_float, default=None,
                   help="class-conditional runs: the guidance w the steps are fitted for (default 0.5)")
    s.add_argument("--weights", default="ema", help="ema (default) or model")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    _coupling_options(s, "fit the steps")
    _quiet_option(s)


def _distill_options(s) -> None:
    from .distill import DEFAULT_BASE, DEFAULT_ITERATIONS, DEFAULT_LR, DEFAULT_STEPS

    s.add_argument("run", metavar="RUN", help="run directory written by `physdiff train` (v or x0 prediction)")
    s.add_argument("--steps", type=_index_list, default=list(DEFAULT_STEPS),
                   help="the students kept: their network evaluations, powers of two below --base (default "
                   + ",".join(map(str, DEFAULT_STEPS)) + ")")
    s.add_argument("--base", type=_positive_int, default=DEFAULT_BASE,
                   help=f"the first teacher: the run's network with DDIM on this many logSNR-uniform steps, a power "
                   f"of two (default {DEFAULT_BASE})")
    s.add_argument("--iterations", type=_positive_int, default=DEFAULT_ITERATIONS,
                   help=f"optimiser steps per halving round (default {DEFAULT_ITERATIONS})")
    s.add_argument("--batch-size", type=_positive_int, default=None, help="default the run's train.batch_size")
    s.add_argument("--lr", type=_finite_float, default=DEFAULT_LR,
                   help=f"Adam's learning rate, annealed linearly to 0 in each round (default {DEFAULT_LR:g})")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--weights", default="ema", help="the teacher: ema (default) or model")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    _quiet_option(s)


def _plot_options(s) -> None:
    _run_options(s, 3000)
    s.add_argument("--guidance", type=_finite_float, default=None, help="image runs: guidance w (default 0.5)")
    _coupling_options(s, "plot")
    _format_option(s)
    _quiet_option(s)


def _theory_point_options(s) -> None:
    """MODEL, --L and every registered theory parameter (--kappa, --beta, ...): one theory at one point."""
    from .config import theory_fields
    from .lattice.theory import theory_names

    s.add_argument("model", metavar="MODEL", help=f"a lattice theory: {', '.join(theory_names())}")
    s.add_argument("--L", type=_positive_int, required=True, help="lattice size L (L×L, periodic), >= 2")
    for k, (key, f) in theory_fields().items():
        if k != "L":
            s.add_argument("--" + k, type=_finite_float, default=None,
                           help=f"{f.metadata['doc']} (default {f.default} for {_theories_with(key[7:])})")


def _mcmc_options(s) -> None:
    _theory_point_options(s)
    s.add_argument("--n", type=_positive_int, default=10_000, help="configurations to save (default 10000)")
    s.add_argument("--chains", type=_positive_int, default=16, help="parallel chains, half hot and half cold")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--no-cluster", action="store_true", help="phi4: HMC only, no Wolff updates of the signs")
    s.add_argument("--out", required=True,
                   help="output .npy (N, L, L), its parameters in the .json and the chains' state in the "
                        ".state.safetensors beside it; or .h5 (HDF5: configs, mc_time, chain, parameters as "
                        "attributes, state in the group mc_state)")
    s.add_argument("--resume", action="store_true",
                   help="extend the ensemble in --out to --n configurations in all, continuing its chains exactly "
                        "(bit for bit one run of --n); give the options it was made with")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _quiet_option(s)


def _scan_options(s) -> None:
    from .config import theory_fields
    from .lattice.scan import GRID_HELP
    from .lattice.theory import theory_names

    s.add_argument("model_name", metavar="MODEL", help=f"a lattice theory: {', '.join(theory_names())}")
    s.add_argument("--L", required=True, help="lattice sizes, e.g. 8,16 (L×L, periodic); the Binder cumulants of "
                   "successive sizes are crossed")
    for k, (key, f) in theory_fields().items():
        if k != "L":
            s.add_argument("--" + k, default=None, metavar="VALUES",
                           help=f"{f.metadata['doc']}: {GRID_HELP}; exactly one parameter is scanned (default "
                                f"{f.default} for {_theories_with(key[7:])})")
    s.add_argument("--n", type=_positive_int, default=4000, help="configurations per point (default 4000)")
    s.add_argument("--chains", type=_positive_int, default=16, help="parallel chains per point (default 16)")
    s.add_argument("--seed", type=_seed, default=0,
                   help="each point's Monte Carlo seed is drawn from (seed, L, couplings): adding couplings later "
                        "leaves the other points' ensembles as they are")
    s.add_argument("--no-cluster", action="store_true", help="phi4: HMC only, no Wolff updates of the signs")
    s.add_argument("--out", required=True, metavar="DIR",
                   help="folder of the scan: ensembles/ (reused by a later scan into it), scan.json, scan.csv and "
                        "the figures scan_observables and scan_binder (recomputed on every run)")
    s.add_argument("--model", metavar="RUN", help="a trained lattice run of this theory: at every point of its L, its "
                   "exact sampler aimed at the point's couplings (raw and corrected observables, acceptance, ESS/N, "
                   "log Z) and the figure scan_model of ESS/N against the coupling")
    s.add_argument("--model-n", type=_positive_int, default=1000, help="proposals per point for --model (default 1000)")
    s.add_argument("--steps", type=_positive_int, default=None,
                   help="--model: RK4 steps of its ODE (default the run's: 12 for v-prediction)")
    s.add_argument("--device", default="auto", help="--model: auto, cpu or cuda")
    s.add_argument("--json", action="store_true", help="print the scan's JSON instead of a table")
    s.add_argument("--overwrite", action="store_true",
                   help="replace scan.json, scan.csv or figures in --out that an earlier scan did not write (those of "
                        "an earlier scan are recomputed anyway; ensembles are never replaced)")
    _format_option(s)
    _quiet_option(s)


def _observables_options(s) -> None:
    s.add_argument("ensemble", metavar="ENSEMBLE", help="(N, L, L) .npy with its .json of parameters beside it, or .h5")
    s.add_argument("--compare", metavar="OTHER", help="a second ensemble (.npy or .h5) of the same theory")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--plot", metavar="DIR", help="write histograms, correlator (each with a .csv of its numbers) and "
                   "configurations figures to DIR")
    _format_option(s)
    s.add_argument("--pyerrors", metavar="OUT.json.gz",
                   help="also write the per-configuration M, |M|, M^2, M^4, S/V and g(r) as pyerrors Obs (chains as "
                        "replicas NAME|r<k>) for pyerrors.input.json.load_json; needs pip install pyerrors")
    s.add_argument("--overwrite", action="store_true", help="replace existing figures in DIR and the --pyerrors file")
    _quiet_option(s)


def _free_energy_options(s) -> None:
    from .lattice.free_energy import METHODS

    _theory_point_options(s)
    s.add_argument("--method", choices=METHODS, required=True,
                   help="ti: thermodynamic integration from the solvable point; mbar: the same ensembles through "
                        "MBAR (pymbar); jarzynski: non-equilibrium trajectories from the solvable point; diffusion: "
                        "the exact sampler of --run")
    s.add_argument("--run", metavar="RUN", help="diffusion: a trained run of this theory and L")
    s.add_argument("--parameter", help="ti, mbar, jarzynski: the parameter moved from its solvable value "
                   "(default the theory's first: kappa for phi4, beta for ising)")
    s.add_argument("--n", type=_positive_int, default=None,
                   help="configurations per grid point (ti, mbar; default 1600), trajectories (jarzynski; default "
                        "256) or proposals (diffusion; default 1000)")
    s.add_argument("--points", type=_positive_int, default=9, help="ti, mbar: grid points, 1 mod 4 (default 9)")
    s.add_argument("--steps", type=_positive_int, default=200, help="jarzynski: coupling steps per trajectory")
    s.add_argument("--error", type=float, default=None, metavar="SIGMA",
                   help="grow the estimate from the pilot (--n, --points) until σ(log Z) <= SIGMA nats: ti refines its "
                        "grid where the integrand bends and extends its ensembles, mbar extends them, jarzynski adds "
                        "trajectories, diffusion draws more proposals")
    s.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="stop growing before SECONDS in all (with --error: whichever comes first; alone: use them)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--no-cluster", action="store_true", help="phi4: HMC only, no Wolff updates of the signs")
    s.add_argument("--device", default="auto", help="diffusion: auto, cpu or cuda")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    _quiet_option(s)


def _demo_options(s) -> None:
    from .config import Config

    s.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    s.add_argument("--steps", type=_positive_int, default=Config().train.steps)
    s.add_argument("--n", type=_positive_int, default=5000)
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier demo in the folder")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress of the training and sampling (default on; --no-progress or -q: none)")
    _quiet_option(s)


# the options of each command, added only when the command is named (they import the library)
BUILDERS = {"data": _data_options, "train": _train_parser_options, "sample": _sample_options,
            "evaluate": _evaluate_options, "encode": _encode_options, "fit-steps": _fit_steps_options,
            "distill": _distill_options, "plot": _plot_options, "mcmc": _mcmc_options,
            "observables": _observables_options, "scan": _scan_options, "free-energy": _free_energy_options,
            "demo": _demo_options}



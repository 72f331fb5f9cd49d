"""The ``physdiff`` command line's arguments: the types and checks of option values (built from
the config's fields and the theory registry), each command's one-line help and examples, and
how a command line is read before it is parsed (the command it names, negative numbers, theory
files). The options of each command and the parser: ``options.py``; ``cli.py`` runs the commands.
``physdiff --help`` imports no torch."""

from __future__ import annotations

import argparse
import math

from .errors import PhysdiffError
from .provenance import version

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
    "fit-steps": ("examples:\n  physdiff fit-steps runs/spiral --steps 10   # unipc; runs/spiral/timesteps.json\n"
                  "  physdiff sample runs/spiral --sampler unipc --steps 10 --out s.npy   # uses them\n"
                  "  physdiff sample runs/spiral --sampler unipc --steps 10 --spacing logsnr --out s.npy   # not"),
    "distill": ("examples:\n  physdiff distill runs/spiral   # 1, 2, 4 and 8 steps: runs/spiral/distilled.safetensors\n"
                "  physdiff distill runs/spiral --steps 4,8 --base 128 --iterations 4000\n"
                "  physdiff sample runs/spiral --sampler distilled --steps 4 --out s.npy"),
    "plot": ("examples:\n  physdiff plot runs/spiral   # writes runs/spiral/{samples,forward,reverse,loss}.png\n"
             "  physdiff plot runs/phi4 --format pdf   # histograms, correlator (+ .csv), configurations, loss"),
    "encode": "example:\n  physdiff encode runs/spiral --data spiral.npy --steps 100 --out latents.npy",
    "demo": "example:\n  physdiff demo --out demo-out   # gaussian, two_gaussians, spiral: figures + metrics.md",
    "mcmc": ("examples:\n  physdiff mcmc phi4 --L 8 --kappa 0.2705 --lam 0.022 --n 10000 --seed 0 --out phi4.npy\n"
             "  physdiff mcmc ising --L 16 --beta 0.44 --n 10000 --seed 0 --out ising.h5\n"
             "  physdiff mcmc ising --L 16 --beta 0.44 --n 20000 --seed 0 --out ising.h5 --resume   # 10000 more"),
    "scan": ("examples:\n  physdiff scan phi4 --L 8,16 --kappa 0.26:0.28:9 --lam 0.022 --n 4000 --out scan/\n"
             "  physdiff scan ising --L 8,16,32 --beta 0.40:0.48:9 --n 4000 --out ising-scan/\n"
             "  (a second run into the same folder reuses its ensembles; a larger --n extends them)"),
    "observables": ("examples:\n  physdiff observables phi4.npy\n"
                    "  physdiff observables model.npy --compare phi4.npy --plot figs/\n"
                    "  physdiff observables phi4.npy --pyerrors phi4.json.gz"),
    "free-energy": ("examples:\n  physdiff free-energy ising --L 16 --beta 0.44 --method mbar --json\n"
                    "  physdiff free-energy phi4 --L 16 --kappa 0.2705 --lam 0.022 --method ti --points 13\n"
                    "  physdiff free-energy ising --L 16 --beta 0.44 --method jarzynski --n 256 --steps 4000\n"
                    "  physdiff free-energy phi4 --L 8 --kappa 0.2705 --lam 0.022 --method diffusion --run runs/phi4"),
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
FIGURE_FORMATS = ("png", "pdf", "svg")  # checkpoint.FIGURE_FORMATS, here without its import
MAX_SEED = 2**63 - 1


def _index_list(text: str) -> list[int]:
    """argparse type: comma-separated non-negative integers, e.g. 0,40,999."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} must hold indices >= 0")
    return values


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


def _coupling_type(flag: str, f):
    """argparse type of a theory coupling of `train`: a number, or LO:HI, the range of a
    coupling-conditioned run (``lattice/conditioning.py``), each end checked by the field."""
    one = _config_type(flag, f)

    def parse(text: str):
        if ":" not in text:
            return one(text)
        parts = text.split(":")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number or a range LO:HI")
        lo, hi = (one(part) for part in parts)
        if not lo < hi:
            raise argparse.ArgumentTypeError(f"{text!r}: a range LO:HI needs LO < HI")
        return [lo, hi]

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
                        "rtol": _finite_float, "atol": _finite_float, "order": _positive_int,
                        "variant": str, "timesteps": _index_list}


def _theories_with(param: str) -> str:
    from .lattice.theory import THEORIES

    return ", ".join(n for n, c in THEORIES.items() if param in c.parameters())



# one-line help of each command: all that `physdiff --help` needs, so it imports no torch
COMMANDS = {
    "data": "Write samples of a true toy distribution to a .npy file.",
    "train": "Train a model into a run directory.",
    "sample": "Draw samples from a trained run (data units) into a .npy file.",
    "evaluate": "Distances between model samples and fresh true samples, beside their noise floors.",
    "encode": "Deterministic DDIM inversion: data points to their latents x_T.",
    "fit-steps": "Fit the visited timesteps of a deterministic fast sampler to a run (used by sample from then on).",
    "distill": "Progressive distillation: few-step students of a run's network (sample --sampler distilled).",
    "plot": "Write the run's figures: samples vs data, forward and reverse process, loss.",
    "mcmc": "Reference Monte Carlo of a lattice theory: φ⁴ by HMC + Wolff clusters, Ising by Wolff.",
    "observables": "Lattice observables of an ensemble with Γ-method errors; --compare another ensemble.",
    "scan": "A lattice theory over a range of one coupling at several L: observables and Binder crossings.",
    "free-energy": "log Z of a lattice theory: thermodynamic integration, MBAR, Jarzynski or the exact sampler.",
    "demo": "The course's tour: train gaussian, two_gaussians and spiral; figures and a metrics table.",
}


class _VersionAction(argparse.Action):
    """``--version``: looked up only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog} {version()}")
        parser.exit()


def _named_command(argv: list[str]) -> str | None:
    """The sub-command ``argv`` names: its first token that is not an option (the top-level
    options take no values), or None."""
    return next((tok for tok in argv if not tok.startswith("-")), None)


def _join_negative_numbers(argv: list[str]) -> list[str]:
    """``--lr -1e-3`` → ``--lr=-1e-3``, ``--kappa -0.1:0.2`` → ``--kappa=-0.1:0.2`` (and a scan's list
    ``--kappa -0.1,0.2``): argparse reads
    a value that starts with '-' and is not a plain negative integer or decimal (an exponent, a
    range) as an option; the value's own check then names it."""
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if tok.startswith("--") and "=" not in tok and nxt is not None and nxt.startswith("-") and len(nxt) > 1:
            try:
                # a number, a range LO:HI (or start:stop:count) or a list a,b,c (scan) from a negative start
                for part in nxt.replace(",", ":").split(":"):
                    float(part)
            except ValueError:
                pass
            else:
                out.append(f"{tok}={nxt}")
                i += 2
                continue
        out.append(tok)
        i += 1
    return out


# the commands that read lattice theories: ``--theory-file FILE`` loads a user's before the parser is built
THEORY_COMMANDS = ("train", "sample", "encode", "fit-steps", "distill", "evaluate", "plot", "mcmc", "scan",
                   "observables", "free-energy")


def theory_files(argv: list[str]) -> list[str]:
    """The files of every ``--theory-file FILE`` (or ``--theory-file=FILE``) in ``argv``."""
    out = []
    for i, tok in enumerate(argv):
        if tok == "--theory-file" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif tok.startswith("--theory-file="):
            out.append(tok.split("=", 1)[1])
    return out


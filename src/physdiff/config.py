"""Typed configuration: defaults in one place, TOML in and out, validation with clear messages.

A config file has up to four tables, ``[data]``, ``[diffusion]``, ``[model]``, ``[train]``;
any key left out takes its default. The resolved configuration (every default written out)
is saved as ``config.toml`` in each run.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from .data.images import FOLDER_HOLDS, IMAGE_DATASETS
from .data.kinds import KIND_NAMES, NORMALIZATIONS, resolve_kind
from .diffusion import LOSSES, PREDICTIONS, VARIANCES
from .errors import PhysdiffError
from .lattice.data import embedding_of, resolve_embedding
from .lattice.embedding import EMBEDDING_NAMES, EMBEDDINGS
from .schedule import SCHEDULES


def _f(default, *, doc: str = "", lo=None, hi=None, lo_open=False, choices=None, cli=None):
    """A config field with its allowed range or choices; ``cli``: the name of the `physdiff
    train` option that sets it (the CLI builds the option, its type and help from this)."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices, "cli": cli}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _f("spiral", doc="toy dataset name, an image set (digits, mnist, fashion-mnist, images) or a "
                      "lattice theory (phi4, ising, or one registered from Python; its parameters go in [theory]); "
                      "ignored when `file` is set", cli="dataset")
    file: str = _f("", doc="path of a (N, D) .npy or .csv file of the user's data; '' = use `dataset`")
    kind: str = _f("auto", choices=("auto", *KIND_NAMES),
                   doc="kind of data (normalisation, clipping, default network and sampler); auto = from "
                   "dataset and file, written out resolved")
    normalization: str = _f("auto", choices=NORMALIZATIONS,
                            doc="standard = per-dimension mean/std; scalar = one scale, no shift (keeps "
                            "symmetries); pixel = [0, 1] -> [-1, 1]; auto = the kind's")
    folder: str = _f("", doc="folder of the IDX files (mnist, fashion-mnist) or PNG images (images)", cli="folder")
    download: bool = _f(False, doc="fetch the IDX files of mnist / fashion-mnist into `folder` if missing")
    conditional: bool = _f(True, doc="condition on class labels when the dataset has them")
    n_train: int = _f(100_000, lo=16, hi=50_000_000, cli="n_train",
                      doc="size of the training set drawn from a toy dataset or a lattice theory's Monte Carlo")
    seed: int = _f(0, lo=0, hi=2**63 - 1, doc="seed of the toy (or lattice Monte Carlo) training set, and of the "
                   "rows of a data file held out for validation")
    validation_fraction: float = _f(0.1, lo=0.0, hi=0.5, cli="validation_fraction",
                                    doc="data files: share of the rows held out of training (drawn by data.seed, "
                                    "recorded in the run's validation.npy): the validation loss of metrics.csv and "
                                    "evaluate's reference; 0 = train on every row (evaluate then compares with halves "
                                    "of the file and cannot see memorisation)")
    embedding: str = _f("auto", choices=EMBEDDING_NAMES, cli="embedding",
                        doc="lattice theories with discrete spins: the continuous variable the model learns; "
                        "a name of lattice/embedding.py (exact density, exact way back: --metropolis is exact), "
                        "none = the spins themselves, read back through the sign; "
                        "auto = the theory's default (written out resolved)")
    couplings: int = _f(9, lo=2, hi=1000, cli="couplings",
                        doc="coupling-conditioned lattice runs (a [theory] coupling given as [lo, hi], on the "
                        "command line --kappa LO:HI): Monte Carlo training sets at this many evenly spaced couplings, "
                        "data.n_train configurations in all")
    embedding_shift: float = _f(1.0, lo=0.0, lo_open=True, hi=100.0, cli="embedding_shift",
                                doc="the continuous embedding's shift (lattice/embedding.py: W = βJ + (4β + shift) I, "
                                "positive definite for shift > 0)")
    mean: list = _f([1.0, -0.5], doc="mean of the `gaussian` dataset")  # noqa: RUF009
    cov: list = _f([[1.0, 0.6], [0.6, 0.5]], doc="covariance of the `gaussian` dataset")  # noqa: RUF009


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = _f(1000, lo=1, hi=100_000, doc="T, the number of diffusion steps", cli="timesteps")
    schedule: str = _f("linear", choices=SCHEDULES, cli="schedule",
                       doc="how β_t grows with t: linear (Ho et al. 2020), cosine (Nichol & Dhariwal 2021) or "
                       "sigmoid (Chen 2023)")
    prediction: str = _f("v", choices=PREDICTIONS, cli="prediction",
                         doc="what the network predicts; v (Salimans & Ho 2022) keeps x̂₀ bounded at t = T, "
                         "where ε-prediction amplifies its error by 1/√ᾱ_T")
    loss: str = _f("simple", choices=LOSSES, doc="simple = ε-MSE (Ho eq. 14); mu = 1/(2σ²)‖μ̃-μ_θ‖²", cli="loss")
    variance: str = _f("beta", choices=VARIANCES, doc="σ_t² of the reverse step: β_t or β̃_t", cli="variance")
    clip_x0: float = _f(0.0, lo=0.0, doc="clamp predicted x_0 to [-c, c] when sampling; 0 = off")


@dataclass(frozen=True)
class MLPConfig:
    """[model.mlp]: the residual MLP (vectors, and lattice fields flattened)."""

    width: int = _f(128, lo=1, hi=65_536, cli="width",
                    doc="mlp: hidden width; 128 for vector data, max(128, 2L²) (at most 2048) for lattice runs")
    depth: int = _f(3, lo=1, hi=1000, doc="mlp: number of residual blocks", cli="depth")
    fourier_features: int = _f(0, lo=0, hi=65_536, doc="random Fourier features of the input; 0 = off")
    fourier_scale: float = _f(1.0, lo=0.0, lo_open=True)
    site_width: int = _f(0, lo=0, hi=65_536, doc="mlp: width of a network shared by every coordinate (a local "
                         "nonlinearity on a lattice, e.g. φ⁴'s φ_x³); 0 = off")


@dataclass(frozen=True)
class UNetConfig:
    """[model.unet]: the U-Net (images, and lattice fields with model.arch = unet)."""

    channels: int = _f(32, lo=1, hi=4096, doc="unet: channels of the first level")
    channel_mult: list = _f([1, 2], doc="unet: channel multiplier per level; len - 1 down-samplings")  # noqa: RUF009
    num_res_blocks: int = _f(1, lo=1, doc="unet: residual blocks per level")
    attention: bool = _f(True, doc="unet: self-attention at the lowest resolution")
    dropout: float = _f(0.0, lo=0.0, hi=1.0, doc="unet: dropout in residual blocks")
    padding: str = _f("zeros", choices=("zeros", "circular"), doc="unet: circular = periodic lattice")


@dataclass(frozen=True)
class LocalConfig:
    """[model.local]: the lattice network of periodic convolutions (nets/local.py), whose exact
    divergence costs C(p² + 1) Jacobian-vector products at every lattice size."""

    channels: int = _f(32, lo=1, hi=4096, doc="local: channels of every convolution")
    depth: int = _f(3, lo=1, hi=64, doc="local: 3×3 periodic convolutions = the receptive field's radius")
    modes: int = _f(0, lo=0, hi=8, doc="local: the field's Fourier modes 0 < max(|k₁|, |k₂|) ≤ modes (units of "
                    "2π/L), fed to the first convolution as a smooth field P x of their own (exact divergence: "
                    "one more product per mode); 0 = off")


FAMILIES = {"mlp": MLPConfig, "unet": UNetConfig, "local": LocalConfig}


@dataclass(frozen=True)
class ModelConfig:
    """[model]: what every network has, and one sub-table per network family. A key of a family
    written directly in [model] (the layout of version-1 configs) is read into its sub-table."""

    arch: str = _f("auto", choices=("auto", "mlp", "unet", "local"),
                   doc="auto: the data kind's network; local = periodic convolutions with an exact divergence "
                   "whose cost does not grow with L (lattice fields)")
    time_dim: int = _f(64, lo=2, hi=65_536, doc="size of the sinusoidal timestep features")
    symmetry: str = _f("auto", choices=("auto", "none", "odd"),
                       doc="odd: ε(−x) = −ε(x) by construction, so q(x) = q(−x) exactly; auto = the data kind's")
    gaussian: str = _f("auto", choices=("auto", "none", "spectrum"),
                       doc="spectrum: add the exact denoiser of a Gaussian field with the training data's lattice "
                       "power spectrum, so the network learns only the rest (nets/gaussian.py); auto = the data "
                       "kind's")
    mlp: MLPConfig = field(default_factory=MLPConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    local: LocalConfig = field(default_factory=LocalConfig)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _f(6000, lo=1, cli="steps", doc="optimiser steps of training (with --resume: the new total)")
    batch_size: int = _f(512, lo=1, hi=2**20, cli="batch_size", doc="training examples drawn per optimiser step")
    lr: float = _f(2e-3, lo=0.0, lo_open=True, doc="peak learning rate of AdamW", cli="lr")
    warmup: int = _f(200, lo=0, doc="linear warm-up steps, then cosine decay")
    lr_min_ratio: float = _f(0.05, lo=0.0, hi=1.0, doc="final lr as a fraction of the peak")
    weight_decay: float = _f(0.0, lo=0.0)
    grad_clip: float = _f(1.0, lo=0.0, doc="max gradient norm; 0 = off")
    ema_decay: float = _f(0.995, lo=0.0, hi=1.0, doc="EMA of the weights, used for sampling; 0 = off")
    label_dropout: float = _f(0.1, lo=0.0, hi=1.0, cli="label_dropout",
                          doc="share of labels replaced by 'no label' (for guidance)")
    seed: int = _f(0, lo=0, hi=2**63 - 1, cli="seed",
                   doc="seed of the network's initial weights and of every training draw (batches, t, noise)")
    log_every: int = _f(100, lo=1, doc="steps between rows of metrics.csv")
    checkpoint_every: int = _f(1000, lo=1, doc="steps between checkpoints", cli="checkpoint_every")
    device: str = _f("auto", choices=("auto", "cpu", "cuda"), cli="device",
                     doc="where to train; auto = cuda when a GPU is present, else cpu")
    precision: str = _f("fp32", choices=("fp32", "bf16", "fp16"),
                        doc="autocast dtype of the forward pass; fp16 adds gradient scaling", cli="precision")
    compile: bool = _f(False, doc="torch.compile the network (needs a C++ compiler on CPU)")


@dataclass(frozen=True)
class Config:
    """The four typed tables, and ``theory``: the lattice size and the parameters of the lattice
    theory that ``data.dataset`` names ({"L": 8, "kappa": ..., "lam": ...}; {} for other data),
    each checked by the theory (``lattice/theory.py``)."""

    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    theory: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return asdict(self)

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """Apply {"section.key": value} (values already typed); validates the result. Every
        other key keeps its current value (image defaults are not re-applied: build an image
        config with ``config_from_dict({"data": {"dataset": "digits"}})``)."""
        return config_from_dict(self.to_dict(), overrides)


SECTIONS = {f.name: f.default_factory for f in fields(Config) if f.name != "theory"}
CONFIG_VERSION = 8  # 1: no version key, no data.kind / data.normalization (read as auto);
# 2: no model.gaussian, model.mlp.site_width (read as none and 0: those runs' weights have neither);
# 3: the lattice size and couplings in [data] (data.L, kappa, lam, beta) instead of [theory];
# 4: [theory], and every `auto` of a run's config.toml resolved when training wrote it;
# 5: data.embedding (runs of version <= 4 learnt the spins themselves: read as "none");
# 6: data.validation_fraction (runs of version <= 5 trained on every row of a data file: read as 0);
# 7: model.local.modes (the local networks of runs of version <= 6 read no low modes: read as 0);
# 8: data.couplings refused without a coupling range (runs of version <= 7 stored it unused: read as the default)
DEFAULT_L = 8
# [data] keys of versions <= 3 that now live in [theory], with the defaults those versions wrote out
LEGACY_THEORY_KEYS = {"L": 8, "kappa": 0.2705, "lam": 0.022, "beta": 0.44}
L_FIELD = field(default=DEFAULT_L, metadata={"doc": "lattice theories: the lattice is L×L, periodic", "lo": 2,
                                            "hi": None, "lo_open": False, "choices": None, "cli": "L"})


def theory_fields() -> dict:
    """{option name: (config key, field)} of the [theory] table: L and the parameters of every
    registered theory (a name shared by two theories is one option)."""
    from .lattice.theory import THEORIES, theory_names

    out = {"L": ("theory.L", L_FIELD)}
    for name in theory_names():
        for pname, f in THEORIES[name].parameters().items():
            out.setdefault(f.metadata.get("cli") or pname, (f"theory.{pname}", f))
    return out


def _theory_table(raw: dict, version: int) -> dict:
    """The validated [theory] table of a raw config (legacy [data] keys moved in), {} when the
    data are not a lattice theory."""
    from .lattice.theory import check_lattice_size, get_theory, is_theory

    data = raw.get("data", {})
    table = raw.pop("theory", {})
    if not isinstance(table, dict):
        raise PhysdiffError(f"config section [theory] must be a table, got {type(table).__name__}")
    legacy = {k: data.pop(k) for k in LEGACY_THEORY_KEYS if isinstance(data, dict) and k in data}
    dataset = data.get("dataset", DataConfig.dataset) if isinstance(data, dict) else None
    lattice = isinstance(data, dict) and not data.get("file") and is_theory(dataset)

    def stale(k, v):  # a written-out default of an old run, or of another theory: dropped
        return version <= 3 or (v == LEGACY_THEORY_KEYS[k] and not isinstance(v, bool))

    if not lattice:
        if table:
            raise PhysdiffError(f"config section [theory] is for lattice theories; data.dataset = {_show(dataset)} "
                                "is not one")
        bad = [k for k, v in legacy.items() if not stale(k, v)]
        if bad:
            raise PhysdiffError(f"data.{bad[0]} applies to lattice theories only, and data.dataset = "
                                f"{_show(dataset)} is not one")
        return {}
    cls = get_theory(dataset)
    params = cls.parameters()
    for k, v in legacy.items():
        if k == "L" or k in params:
            if k in table and table[k] != v:
                raise PhysdiffError(f"data.{k} and theory.{k} are both given; keep theory.{k}")
            table.setdefault(k, v)
        elif not stale(k, v):
            raise PhysdiffError(f"data.{k} is not a parameter of theory {dataset!r}; allowed in [theory]: "
                                f"{', '.join(['L', *params])}")
    L = check_lattice_size("theory.L", table.get("L", DEFAULT_L))
    ranged = [k for k, v in table.items() if k != "L" and isinstance(v, list | tuple)]
    if len(ranged) > 1:
        raise PhysdiffError(f"theory.{ranged[0]} and theory.{ranged[1]} are both ranges; a run is conditioned on one "
                            "coupling at a time")
    ends = [{k: v for k, v in table.items() if k != "L"}]
    if ranged:  # a coupling-conditioned run (lattice/conditioning.py): both ends checked by the theory
        name, span = ranged[0], table[ranged[0]]
        if (len(span) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in span)
                or not span[0] < span[1]):
            raise PhysdiffError(f"theory.{name} = {span!r}: a range is [lo, hi] with lo < hi (on the command line "
                                f"--{name} LO:HI)")
        ends = [{**ends[0], name: float(v)} for v in span]
    for values in ends:
        theory = cls.from_values(values, "theory.", also=("L",))
        theory.validate(L)
    out = {"L": L, **{k: getattr(theory, k) for k in params}}
    if ranged:
        out[ranged[0]] = [float(v) for v in table[ranged[0]]]
    return out


def _show(name) -> str:
    """A user-given name as typed, or its repr if it holds line breaks or other unprintables."""
    return name if isinstance(name, str) and name.isprintable() else repr(name)


def _suggest(name: str, allowed) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def field_type(f) -> type:
    """The Python type of a config field's values (that of its default)."""
    return type(f.default if f.default is not MISSING else f.default_factory())


def check_value(where: str, f, value):
    """Type and range check of one value against its field; returns the value typed."""
    meta = f.metadata
    kind = field_type(f)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                raise PhysdiffError(f"{where} = {value!r} is not a finite number")
    elif kind is list:
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise PhysdiffError(f"{where} = {value!r} has type {type(value).__name__}; expected {kind.__name__}")
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise PhysdiffError(f"{where} = {value!r} is not allowed{_suggest(str(value), meta['choices'])}; "
                            f"allowed: {', '.join(meta['choices'])}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        op = ">" if meta.get("lo_open") else ">="
        raise PhysdiffError(f"{where} = {value!r} is out of range; must be {op} {lo}")
    if hi is not None and value > hi:
        raise PhysdiffError(f"{where} = {value!r} is out of range; must be <= {hi}")
    return value


# Defaults that differ for image datasets (applied to the keys a config leaves out).
IMAGE_DEFAULTS = {  # images keep ε-prediction (measured in benchmarks/README.md); clip_x0 bounds x̂₀
    "diffusion": {"clip_x0": 1.0, "prediction": "eps"},
    "train": {"steps": 5000, "batch_size": 128, "lr": 1e-3, "ema_decay": 0.999, "checkpoint_every": 500},
}


# Defaults for lattice datasets (benchmarks/README.md): the kind's odd residual MLP, sized so that
# its exact divergence (one forward and D = L² backward passes per ODE evaluation) stays
# affordable; if model.arch = unet is chosen, a periodic one.
def lattice_mlp_width(L: int) -> int:
    """Default width of a lattice run's MLP: at least twice the number of sites. Narrower than
    the field it denoises, the network cannot carry the site-by-site detail of the last steps:
    at L = 16 (256 sites) width 128 leaves the action density 244 errors off and the Metropolis
    acceptance at 0.004; width 512 gives 18 errors raw, acceptance 0.21, ESS/N 0.11 and every
    corrected observable within 2 errors (benchmarks/README.md, GPU runs). Capped at 2048: beyond
    L = 32 use the periodic U-Net (model.arch = unet), whose size does not grow with L."""
    return int(min(max(128, 2 * L * L), 2048))


def lattice_local_batch(L: int) -> int:
    """Default batch of a lattice run with the local network (model.arch = local): the same number
    of sites per batch at every L, 512 configurations at L = 8 (32 768 sites), at least 16. The
    network is translation-equivariant, so each configuration gives V site-level examples; a
    constant number of sites keeps a training step's cost about the same at every L (the
    training times of benchmarks/README.md's lattice runs)."""
    return int(min(512, max(16, 32_768 // (L * L))))


def lattice_local_modes(L: int) -> int:
    """Default ``model.local.modes`` of a lattice run with the local network: the lowest momenta
    (|k|∞ = 2π/L) as a smooth input field from L = 32 on, none below. Measured at φ⁴ λ = 0.022,
    κ = 0.2705 (benchmarks/README.md): the exact sampler's acceptance rose from 0.48 to 0.53 and
    ESS/N from 0.43 to 0.48 at L = 32 (1000 proposals; 1.5 combined errors), acceptance from 0.067
    to 0.11 at L = 64 (its ESS/N 0.039 ± 0.009 against 0.085 ± 0.076: no significant change), for
    1.4–1.6× the time per proposal; L = 8 and 16 keep the networks measured there (ESS/N 0.99 and
    0.91 without). Two shells (modes = 2) reach ESS/N 0.72 at L = 32 but cost 2.3× one shell per
    proposal, more per independent configuration."""
    return 1 if L >= 32 else 0


def lattice_default_arch(L: int, depth: int = 3) -> str:
    """The network of a lattice run by default: the local network (``nets/local.py``) wherever its
    probe divergence applies (a period p with depth + 1 <= p < L dividing L: L = 8, 10, 12, 16, ...),
    else the residual MLP (tiny lattices, where the local network would fall back to autograd's
    trace). Measured (benchmarks/README.md): at φ⁴ L = 8 ESS/N 0.99 against the MLP's 0.53–0.75,
    at Ising L = 8, β = 0.44 0.95 against 0.08, at L = 16 (see there); its exact divergence costs
    the same number of passes at every L."""
    from .nets.local import probe_period

    return "local" if probe_period(depth, L, L) is not None else "mlp"


LATTICE_DEFAULTS = {
    "data": {"n_train": 10_000},
    "model": {"mlp": {"width": 128, "depth": 3, "site_width": 32},
              "unet": {"padding": "circular", "channels": 16, "channel_mult": [1], "attention": False}},
    "train": {"steps": 6000, "batch_size": 512, "lr": 2e-3, "ema_decay": 0.999, "checkpoint_every": 1000},
}


def config_from_dict(raw: dict[str, Any], overrides: dict[str, Any] | None = None) -> Config:
    """Validated Config from nested dicts (a parsed TOML file) and {"section.key": value}
    overrides; unknown sections or keys are errors. Keys left out take their defaults, which
    for an image dataset (data.dataset in IMAGE_DATASETS) are those of IMAGE_DEFAULTS."""
    if not isinstance(raw, dict):
        raise PhysdiffError("a config must be a table of sections")
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    version = raw.pop("version", CONFIG_VERSION)  # configs of runs written before the key: version 1
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= CONFIG_VERSION:
        raise PhysdiffError(f"config version = {version!r} is not supported; this physdiff reads versions "
                            f"1..{CONFIG_VERSION}")
    if version < 5 and isinstance(raw.get("data", {}), dict) and "embedding" not in raw.get("data", {}):
        raw["data"] = {**raw.get("data", {}), "embedding": "none"}  # their models learnt the spins themselves
    if version < 6 and isinstance(raw.get("data", {}), dict) and "validation_fraction" not in raw.get("data", {}):
        raw["data"] = {**raw.get("data", {}), "validation_fraction": 0.0}  # they held nothing out
    if version < 7 and isinstance(raw.get("model", {}), dict):  # before the key (and its per-size default)
        model = _nest_families(raw.get("model", {}))
        if isinstance(model.get("local", {}), dict):
            model["local"] = {"modes": 0, **model.get("local", {})}
        raw["model"] = model
    if version < 3 and isinstance(raw.get("model", {}), dict):  # runs written before these keys: their weights
        model = _nest_families(raw.get("model", {}))                # have no Gaussian part and no site network
        if isinstance(model.get("mlp", {}), dict):
            model["mlp"] = {"site_width": 0, **model.get("mlp", {})}
        raw["model"] = {"gaussian": "none", **model}
    for dotted, value in (overrides or {}).items():
        if not isinstance(dotted, str):
            raise PhysdiffError(f"override key {dotted!r} must be a string 'section.key'")
        *path, key = dotted.split(".")
        family = next((f for f, c in FAMILIES.items() if key in {x.name for x in fields(c)}), None)
        if path == ["model"] and family:  # the flat name of a family key (version-1 layout)
            path = ["model", family]
        table = raw
        for i, part in enumerate(path):
            if not isinstance(table.setdefault(part, {}), dict):
                raise PhysdiffError(f"config section [{'.'.join(path[:i + 1])}] must be a table, "
                                    f"got {type(table[part]).__name__}")
            table[part] = dict(table[part])
            table = table[part]
        table[key] = value
    if isinstance(raw.get("model"), dict):
        raw["model"] = _nest_families(raw["model"])
    if not isinstance(raw.setdefault("data", {}), dict):
        raise PhysdiffError(f"config section [data] must be a table, got {type(raw['data']).__name__}")
    theory = _theory_table(raw, version)
    data = raw["data"]
    if version < 8 and not any(isinstance(v, list) for v in (theory or {}).values()):
        data.pop("couplings", None)  # stored and unused by those runs: their data are at one coupling
    if not data.get("file") and isinstance(data.get("dataset"), str):
        if theory:
            from .lattice.theory import get_theory

            given = raw.get("model") if isinstance(raw.get("model"), dict) else {}
            local = given.get("local") if isinstance(given.get("local"), dict) else {}
            depth = local.get("depth", LocalConfig.depth)
            arch_default = lattice_default_arch(theory["L"], depth if isinstance(depth, int) and depth >= 1 else 3)
            defaults = _deep_merge(_deep_merge(_deep_merge(LATTICE_DEFAULTS, {"model": {"arch": arch_default}}),
                                               get_theory(data["dataset"]).presets_for(data.get("embedding", "auto"))),
                                   {"model": {"mlp": {"width": lattice_mlp_width(theory["L"])}}})
            if any(isinstance(v, list) for v in theory.values()):  # over the presets: the one network that
                defaults = _deep_merge(defaults, {"model": {"arch": "local"}})  # takes a coupling as an input
            if given.get("arch", defaults["model"]["arch"]) == "local":
                defaults = _deep_merge(defaults, {"train": {"batch_size": lattice_local_batch(theory["L"])},
                                                  "model": {"local": {"modes": lattice_local_modes(theory["L"])}}})
        else:
            defaults = IMAGE_DEFAULTS if data["dataset"] in IMAGE_DATASETS else {}
        for sname, values in defaults.items():
            if isinstance(raw.setdefault(sname, {}), dict):
                raw[sname] = _deep_merge(values, raw[sname])
    sections = {}
    for sname, sval in raw.items():
        if sname not in SECTIONS:
            raise PhysdiffError(f"unknown config section [{_show(sname)}]{_suggest(sname, SECTIONS)}; "
                                f"allowed: {', '.join(SECTIONS)}")
        sections[sname] = _build(sname, SECTIONS[sname], sval)
    return _check_cross(Config(**sections, theory=theory))


def _deep_merge(defaults: dict, given: dict) -> dict:
    """``given`` over ``defaults``, table by table."""
    out = dict(defaults)
    for k, v in given.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _nest_families(model: dict) -> dict:
    """Move the keys of a network family given directly in [model] into [model.<family>]."""
    model = dict(model)
    for family, cls in FAMILIES.items():
        names = {f.name for f in fields(cls)}
        flat = {k: model.pop(k) for k in list(model) if k in names}
        if flat:
            sub = model.setdefault(family, {})
            if not isinstance(sub, dict):
                raise PhysdiffError(f"config section [model.{family}] must be a table, got {type(sub).__name__}")
            both = sorted(set(flat) & set(sub))
            if both:
                raise PhysdiffError(f"model.{both[0]} and model.{family}.{both[0]} are both given; keep one")
            model[family] = flat | sub
    return model


def _build(where: str, cls, values):
    """A config dataclass from a table, recursing into sub-tables; unknown keys are errors."""
    if not isinstance(values, dict):
        raise PhysdiffError(f"config section [{where}] must be a table, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in known:
            raise PhysdiffError(f"unknown config key {where}.{_show(key)}{_suggest(key, known)}; "
                                f"allowed in [{where}]: {', '.join(known)}")
        f = known[key]
        if is_dataclass(f.default_factory if f.default is MISSING else f.default):
            out[key] = _build(f"{where}.{key}", f.default_factory, value)
        else:
            out[key] = check_value(f"{where}.{key}", f, value)
    return cls(**out)


def _check_cross(cfg: Config) -> Config:
    """Checks that involve several keys; returns cfg with ``data.kind`` resolved."""
    m = cfg.model.unet.channel_mult
    if not m or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in m):
        raise PhysdiffError(f"model.unet.channel_mult = {m!r} must be a non-empty list of integers >= 1")
    d = cfg.data
    if d.dataset in FOLDER_HOLDS and not d.file and not d.folder:
        raise PhysdiffError(f"data.dataset = {d.dataset!r} needs data.folder: the folder of its "
                            f"{FOLDER_HOLDS[d.dataset]}")
    _check_gaussian(d.mean, d.cov)
    kind = _check_kind(cfg)
    _check_embedding(cfg)
    _check_lattice_network(cfg)
    return replace(cfg, data=replace(d, kind=kind.name))


def _check_gaussian(mean, cov) -> None:
    """data.mean and data.cov of the `gaussian` dataset: numbers, matching sizes, cov SPD."""
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in mean) or not mean:
        raise PhysdiffError(f"data.mean = {mean!r} must be a non-empty list of numbers")
    if (len(cov) != len(mean) or not all(isinstance(r, list) and len(r) == len(mean) for r in cov)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for r in cov for v in r)):
        raise PhysdiffError(f"data.cov must be a {len(mean)}×{len(mean)} list of lists of numbers to match data.mean")
    import numpy as np

    c = np.asarray(cov, dtype=np.float64)
    if not np.allclose(c, c.T) or np.linalg.eigvalsh(c).min() <= 0:
        raise PhysdiffError(f"data.cov = {cov!r} must be symmetric positive definite")


def _check_kind(cfg: Config):
    """The data kind the data are of (data.kind must agree), with a normalisation it allows."""
    d = cfg.data
    kind = resolve_kind(replace(d, kind="auto"))
    if d.kind not in ("auto", kind.name):
        raise PhysdiffError(f"data.kind = {d.kind!r} does not match the data (data.dataset = {d.dataset!r}, "
                            f"data.file = {d.file!r} are of kind {kind.name!r})")
    if d.normalization not in ("auto", *kind.normalizations):
        why = {"pixel": "pixel is for images in [0, 1]", "standard": "a per-site shift and scale would break the "
               "lattice's symmetries (q(φ) = q(−φ) of the odd network)"}.get(d.normalization, "")
        raise PhysdiffError(f"data.normalization = {d.normalization!r} is not allowed for data of kind {kind.name!r}"
                            f"{f' ({why})' if why else ''}; allowed: auto, {', '.join(kind.normalizations)}")
    return kind


def _check_embedding(cfg: Config) -> None:
    """data.embedding names one of the theory's embeddings, its shift applies only to one, and the
    embedding is numerically sound at these couplings (``embedding.py`` checks W's condition)."""
    d = cfg.data
    if resolve_embedding(cfg) == "none" and d.embedding_shift != DataConfig.embedding_shift:
        raise PhysdiffError(f"data.embedding_shift = {d.embedding_shift:g} applies to a continuous embedding "
                            f"(data.embedding = {', '.join(EMBEDDINGS)}); these data have none")
    if d.embedding not in ("auto", "none"):
        if not cfg.theory:
            raise PhysdiffError(f"data.embedding = {d.embedding!r} is for lattice theories with discrete spins; "
                                f"data.dataset = {d.dataset!r} is not one (allowed here: auto, none)")
        from .lattice.theory import get_theory

        allowed = get_theory(d.dataset).embeddings
        if d.embedding not in allowed:
            raise PhysdiffError(f"data.embedding = {d.embedding!r}: theory {d.dataset!r} has no such embedding; "
                                f"allowed: auto, none{''.join(', ' + a for a in allowed)}")
    if cfg.theory and resolve_embedding(cfg) != "none":
        embedding_of(cfg)  # built once here: a degenerate shift is refused before any work


def _check_lattice_network(cfg: Config) -> None:
    """The local network's low modes fit the lattice; a coupling range (a coupling-conditioned
    run) has the network that reads the coupling, enough configurations per coupling, and a grid
    the float32 network can tell apart."""
    d = cfg.data
    modes, L = cfg.model.local.modes, cfg.theory.get("L")
    if modes and cfg.model.arch in ("auto", "local") and L is not None and L <= 2 * modes:
        raise PhysdiffError(f"model.local.modes = {modes} reads the momenta up to {modes}·2π/L, which alias on "
                            f"L = {L}; allowed: modes <= {(L - 1) // 2} at this size (0 = off)")
    ranged = [k for k, v in cfg.theory.items() if isinstance(v, list)]
    if not ranged:
        if d.couplings != DataConfig.couplings:  # stored and ignored would be silence
            where = (f"no coupling of theory {d.dataset!r} is a range" if cfg.theory
                     else f"data.dataset = {d.dataset!r} is not a lattice theory")
            raise PhysdiffError(f"data.couplings = {d.couplings} applies to a coupling-conditioned run, one whose "
                                "[theory] coupling is a range [lo, hi] (on the command line e.g. --kappa LO:HI); "
                                f"{where}: give a range, or leave data.couplings at its default {DataConfig.couplings}")
        return
    if cfg.model.arch not in ("auto", "local"):
        raise PhysdiffError(f"theory.{ranged[0]} is a range (a coupling-conditioned run): it needs model.arch = local, "
                            f"the network that takes the coupling as an input; got model.arch = {cfg.model.arch!r}")
    lo, hi = cfg.theory[ranged[0]]
    per = d.n_train // d.couplings
    if per < 32:  # each coupling's Monte Carlo: 16 chains, at least 2 configurations each
        raise PhysdiffError(f"data.n_train = {d.n_train} over data.couplings = {d.couplings} leaves {per} "
                            "configurations per coupling; the Monte Carlo of each needs at least 32: raise "
                            "data.n_train or lower data.couplings (on the command line --n-train, --couplings)")
    if (hi - lo) / (d.couplings - 1) < 1e-5 * max(abs(lo), abs(hi)):
        raise PhysdiffError(f"theory.{ranged[0]} = [{lo:g}, {hi:g}] on {d.couplings} couplings: the grid's spacing "
                            "is below 1e-5 of the couplings (the network reads them in float32); widen the range "
                            "or lower data.couplings (--couplings)")


def resolve_auto(cfg: Config) -> Config:
    """``cfg`` with every ``auto`` replaced by what it means for this data today (kind,
    normalisation, network, symmetry, Gaussian part): what a run writes in its config.toml, so
    that it never depends on later defaults."""
    kind = resolve_kind(cfg.data)
    m = cfg.model
    model = replace(m, arch=kind.arch if m.arch == "auto" else m.arch,
                    symmetry=kind.resolve_symmetry(cfg) if m.symmetry == "auto" else m.symmetry,
                    gaussian=kind.gaussian if m.gaussian == "auto" else m.gaussian)
    data = replace(cfg.data, kind=kind.name, normalization=kind.resolve_normalization(cfg),
                   embedding=resolve_embedding(cfg))
    return replace(cfg, data=data, model=model)


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a TOML config (None: no file) with {"section.key": value} overrides."""
    if path is None:
        return config_from_dict({}, overrides)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PhysdiffError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PhysdiffError(f"config file {str(path)!r} could not be read: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PhysdiffError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    return config_from_dict(raw, overrides)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_config(cfg: Config) -> str:
    """The resolved config as TOML text, every field written out, with the format version."""
    lines = ["# physdiff resolved configuration: every default written out", f"version = {CONFIG_VERSION}"]
    def table(name, values):
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict))
        for k, v in values.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for sname, values in cfg.to_dict().items():
        if values or sname != "theory":  # [theory] only for lattice theories
            table(sname, values)
    return "\n".join(lines) + "\n"


__all__ = [
    "IMAGE_DATASETS",
    "Config",
    "DataConfig",
    "DiffusionConfig",
    "MLPConfig",
    "ModelConfig",
    "TrainConfig",
    "UNetConfig",
    "config_from_dict",
    "dump_config",
    "load_config",
    "replace",
    "resolve_auto",
    "theory_fields",
]

"""The theory contract: what physdiff needs to know of a lattice theory, and the registry of theories.

A theory is a frozen dataclass whose fields are its parameters (declared with :func:`param`: a
default, a range and a line of documentation), subclassing :class:`Theory`. Only ``action`` is
required; everything else has a default that follows from it:

- the field: ``components`` real numbers per site of an L×L periodic lattice, or spins with the
  values ``discrete`` (Ising: ±1). A configuration batch is (B, L, L) for one component, (B, C, L, L)
  otherwise (``field_shape``); ensembles on disk use the same shapes;
- ``compact``: the field is made of angles in (−π, π];
- ``monitor(x) -> (N,)``, named ``monitor_name``: the slow observable whose τ_int sets the reference
  Monte Carlo's burn-in and spacing and which its hot/cold check compares (|M| by default; the
  gauge-invariant |Q| of U(1), since a link's mean angle is not gauge invariant);
- ``observables(x, chains, where)``: the table of an ensemble's observables when the scalar
  field's (``observables.measure``: M, |M|, χ, Binder, G(r)) do not apply, e.g. U(1)'s plaquette,
  Q, χ_Q and Wilson loops; None (the default) means the scalar field's;
- ``action(phi) -> (B,)``, the weight being e^{−S}; ``force = −∂S/∂φ`` by autograd unless the
  theory writes it out (HMC uses it);
- ``cluster_update(x, rng)``: an optional cluster move (Wolff) that the reference Monte Carlo
  alternates with HMC (continuous fields) or uses alone (discrete spins);
- ``density(x)``: the per-configuration density the observables report (S/V by default);
- ``z2_symmetric``: S(−φ) = S(φ), so the default network is odd and q(φ) = q(−φ) exactly;
- ``augment(x, generator)``: random symmetry transforms of training fields (the lattice's
  translations, rotations and reflections by default);
- ``postprocess(x)``, ``check_samples(x)``: samples as the theory allows them (spins read
  through their sign), and a check of an ensemble's values;
- ``validate(L)``: one-line errors for parameters with no normalisable law;
- ``presets``: training defaults of its runs (merged over the lattice defaults of ``config.py``);
- ``embedding(name, L, shift)``: a discrete theory may declare continuous embeddings (``embedding.py``:
  a continuous target e^{−S_x} with an exact way back to the spins) that a diffusion model learns
  and the exact sampler corrects; ``default_embedding`` names the one its runs train on.

:func:`register_theory` adds a theory under its ``name``; from then on ``[data] dataset = name``
with a ``[theory]`` table of its parameters trains on it, and ensembles whose JSON says
``{"params": {"model": name, ...}}`` load with it. A user's theory registers the same way from
their own Python file (docs/guide/lattice.md, "Your own theory"), and on the command line from a
theory file (``--theory-file FILE``: :func:`load_theory_file`) or an installed package's entry
point in the group ``physdiff.theories`` (:func:`load_plugins`).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import ClassVar

import numpy as np
import torch

from ..errors import PhysdiffError

MIN_L = 2
MAX_L = 1024  # 10⁶ sites per configuration: beyond it the ensembles alone outgrow any single machine's memory


def param(default: float, *, lo: float | None = 0.0, hi: float | None = None, lo_open: bool = False,
          doc: str = "", cli: str | None = None, symbol: str | None = None):
    """A theory parameter: a dataclass field with its default, allowed range and documentation
    (the metadata the config and the command line read; ``cli`` defaults to the field's name,
    ``symbol``, its name in figures and tables such as "κ", to the field's name)."""
    return field(default=float(default), metadata={"doc": doc, "lo": lo, "hi": hi, "lo_open": lo_open,
                                                   "choices": None, "cli": cli, "symbol": symbol, "theory": True})


def check_number(where: str, value, lo=None, hi=None, lo_open=False) -> float:
    """A finite real number within [lo, hi] (lo excluded when ``lo_open``), or a one-line error."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PhysdiffError(f"{where} = {value!r} must be a finite number")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise PhysdiffError(f"{where} = {value!r} is out of range; must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and value > hi:
        raise PhysdiffError(f"{where} = {value!r} is out of range; must be <= {hi}")
    return float(value)


def check_lattice_size(where: str, L) -> int:
    """L itself, or one line naming it: an integer from MIN_L to MAX_L."""
    if isinstance(L, bool) or not isinstance(L, int) or not MIN_L <= L <= MAX_L:
        raise PhysdiffError(f"{where} = {L!r} is out of range; the lattice needs an integer {MIN_L} <= L <= {MAX_L}")
    return L


def all_neighbours(phi: torch.Tensor) -> torch.Tensor:
    """Σ_{±μ} φ_{x±μ̂}, the four nearest neighbours on the periodic lattice (last two axes)."""
    return (torch.roll(phi, 1, dims=-1) + torch.roll(phi, -1, dims=-1)
            + torch.roll(phi, 1, dims=-2) + torch.roll(phi, -1, dims=-2))


def neighbour_sum(phi: torch.Tensor) -> torch.Tensor:
    """Σ_μ φ_{x+μ̂} over the two positive directions, periodic (last two axes)."""
    return torch.roll(phi, -1, dims=-1) + torch.roll(phi, -1, dims=-2)


def random_lattice_symmetry(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random element of the symmetry group of the periodic square lattice per sample: a
    translation (L² choices), a rotation by a multiple of 90° and a reflection. x: (B, C, L, L)."""
    B, _, L, _ = x.shape
    dev = x.device
    shift = torch.randint(L, (B, 2), generator=generator, device=dev)
    ar = torch.arange(L, device=dev)
    rows = (ar[None, :] + shift[:, :1]) % L  # (B, L)
    cols = (ar[None, :] + shift[:, 1:]) % L
    b = torch.arange(B, device=dev)[:, None, None]
    x = x.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    k = torch.randint(4, (B,), generator=generator, device=dev)
    flip = torch.randint(2, (B,), generator=generator, device=dev).bool()
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    out = x.clone()
    for r in range(1, 4):
        sel = k == r
        out[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
    return out


@dataclass(frozen=True)
class Theory:
    """Base of every lattice theory; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # e.g. "φ⁴": figures and tables
    components: ClassVar[int] = 1
    discrete: ClassVar[tuple[float, ...] | None] = None  # allowed spin values, None: a real field
    compact: ClassVar[bool] = False  # the field is made of angles in (−π, π]
    monitor_name: ClassVar[str] = "abs_m"
    monitor_label: ClassVar[str] = "|M|"
    z2_symmetric: ClassVar[bool] = True
    density_label: ClassVar[str] = "action density $S/V$"
    presets: ClassVar[dict] = {}
    embeddings: ClassVar[tuple[str, ...]] = ()  # names of the continuous embeddings it declares
    default_embedding: ClassVar[str] = "none"

    # ------------------------------------------------------------------ required
    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S per configuration: (B, *field) → (B,); the weight is e^{−S}."""
        raise NotImplementedError(f"theory {self.name!r} defines no action")

    # ------------------------------------------------------------------ defaults
    def force(self, phi: torch.Tensor) -> torch.Tensor:
        """−∂S/∂φ, (B, *field), by autograd (a theory may write it out)."""
        with torch.enable_grad():
            p = phi.detach().requires_grad_(True)
            grad, = torch.autograd.grad(self.action(p).sum(), p)
        return -grad

    def monitor(self, x: np.ndarray) -> np.ndarray:
        """The Monte Carlo's slow observable per configuration (module docstring): |M| by default."""
        return np.abs(np.asarray(x).reshape(len(x), -1).mean(1))

    def observables(self, x: np.ndarray, chains: int, where: str) -> dict | None:
        """The theory's own table of observables, or None for the scalar field's (module docstring)."""
        return None

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """The per-configuration density that observables report: S/V. (B,)"""
        return self.action(x) / (x.shape[-1] * x.shape[-2])

    def cluster_update(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """One cluster move per configuration, or None if the theory has none."""
        return None

    @property
    def has_cluster_update(self) -> bool:
        return type(self).cluster_update is not Theory.cluster_update

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random symmetry transforms of training fields (B, C, L, L) that leave S unchanged."""
        return random_lattice_symmetry(x, generator)

    def postprocess(self, x: np.ndarray) -> np.ndarray:
        """Model samples as the theory allows them: spins read through their sign (a continuous
        model of a discrete law has no density on the spins: they are mapped, not drawn exactly)."""
        if self.discrete is None:
            return x
        if tuple(self.discrete) != (-1.0, 1.0):
            raise NotImplementedError(f"theory {self.name!r}: no read-out for spins {self.discrete}")
        return np.where(x >= 0, 1.0, -1.0).astype(x.dtype)

    @classmethod
    def presets_for(cls, embedding: str) -> dict:
        """The training defaults of a run on ``embedding`` ("auto": the default one)."""
        return cls.presets

    def embedding(self, name: str, L: int, shift: float = 1.0):
        """The continuous embedding ``name`` of this theory on an L×L lattice (``embedding.py``), or
        None for "none". A theory with embeddings overrides this."""
        if name == "none":
            return None
        allowed = ", ".join(("none", *self.embeddings))
        raise PhysdiffError(f"theory {self.name!r} has no embedding {name!r}; allowed: {allowed}")

    def check_samples(self, x: np.ndarray, where: str) -> None:
        """A one-line error if an ensemble holds values the theory's field cannot take."""
        if self.discrete is not None and not np.isin(x, self.discrete).all():
            values = "±1" if tuple(self.discrete) == (-1.0, 1.0) else ", ".join(f"{v:g}" for v in self.discrete)
            raise PhysdiffError(f"{self.title or self.name} ensemble {where} holds values other than {values}")

    def validate(self, L: int) -> None:
        """A one-line error for parameters with no normalisable law on an L×L lattice."""

    def start(self, L: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        """Starting configurations (chains, *field): the first half hot (random), the second
        half cold (ordered, every value +1)."""
        shape = (chains, *self.field_shape(L))
        x = rng.choice(self.discrete, size=shape) if self.discrete is not None else rng.normal(size=shape)
        x[chains // 2:] = 1.0
        return x.astype(np.float64)

    # ------------------------------------------------------------------ derived
    def field_shape(self, L: int) -> tuple[int, ...]:
        """One configuration's shape: (L, L), or (C, L, L) for C components."""
        return (L, L) if self.components == 1 else (self.components, L, L)

    @property
    def params(self) -> dict:
        """{"model": name, parameter: value, ...}: the theory in an ensemble's JSON."""
        return {"model": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @property
    def label(self) -> str:
        values = ", ".join(f"{self.symbol(f.name)} = {getattr(self, f.name):g}" for f in fields(self))
        return f"{self.title or self.name}, {values}" if values else (self.title or self.name)

    def with_values(self, values: dict, L: int, prefix: str = "theory.") -> Theory:
        """This theory with the parameters ``values`` replaced, each checked, and its law checked
        for normalisability on an L×L lattice (the target of a chain aimed at other couplings)."""
        own = {k: v for k, v in self.params.items() if k != "model"}
        theory = type(self).from_values(own | values, prefix)
        theory.validate(L)
        return theory

    @classmethod
    def symbol(cls, parameter: str) -> str:
        """The parameter's symbol in figures and tables (``param(symbol=...)``), else its name."""
        f = cls.parameters().get(parameter)
        return (f.metadata.get("symbol") if f is not None else None) or parameter

    # ------------------------------------------------------------------ free energies
    # {parameter: value} where log Z is known in closed form whatever the other parameters (φ⁴:
    # κ = 0, independent sites; Ising: β = 0); thermodynamic integration, MBAR and Jarzynski
    # start there (``free_energy.py``). A theory with none is refused by those estimators.
    solvable: ClassVar[dict] = {}

    def log_z_solvable(self, L: int) -> float:
        """log Z at a solvable point (this theory's parameters must be one of ``solvable``)."""
        raise PhysdiffError(f"theory {self.name!r} declares no solvable point (Theory.solvable)")

    def sample_solvable(self, L: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """n independent exact draws (n, *field_shape(L)) float64 at a solvable point."""
        raise PhysdiffError(f"theory {self.name!r} has no exact sampler at a solvable point (Theory.sample_solvable)")

    def action_derivative(self, phi: torch.Tensor, parameter: str) -> torch.Tensor:
        """∂S/∂p (B,) for the parameter ``parameter``, by a central difference of step h (exact,
        up to rounding, for an action linear or quadratic in p, as φ⁴'s κ and Ising's β are);
        a theory may write it out. d log Z/dp = −⟨∂S/∂p⟩."""
        from dataclasses import replace

        p = getattr(self, parameter)
        h = 1e-3 * max(1.0, abs(p))
        up, down = replace(self, **{parameter: p + h}), replace(self, **{parameter: p - h})
        return (up.action(phi) - down.action(phi)) / (2 * h)

    @classmethod
    def critical_point(cls, parameter: str, fixed: dict) -> tuple[float, str] | None:
        """(value, label) of the infinite-volume critical value of ``parameter`` at the other
        parameters ``fixed``, where the theory knows it exactly; None (the default) otherwise.
        Scans draw it on their Binder figure."""
        return None

    @classmethod
    def parameters(cls) -> dict:
        """{name: dataclass field} of the theory's parameters."""
        return {f.name: f for f in fields(cls)}

    @classmethod
    def from_values(cls, values: dict, prefix: str = "theory.", also: tuple[str, ...] = ()) -> Theory:
        """The theory from {parameter: value} (missing ones take their defaults), each value
        checked against its range; an unknown name is an error listing the allowed ones (and
        ``also``, names the caller accepts besides). ``prefix`` names a value in messages:
        "theory." (a config table), "params." (an ensemble's JSON), "--" (an option)."""
        known = cls.parameters()
        for key in values:
            if key not in known:
                allowed = ", ".join(prefix + k for k in (*also, *known)) or "none"
                raise PhysdiffError(f"{prefix}{key} is not a parameter of theory {cls.name!r}; allowed: {allowed}")
        out = {}
        for key, f in known.items():
            value = values.get(key, f.default)
            if value is MISSING:
                raise PhysdiffError(f"{prefix}{key} is required for theory {cls.name!r}")
            m = f.metadata
            out[key] = check_number(f"{prefix}{key}", value, m.get("lo"), m.get("hi"), m.get("lo_open", False))
        return cls(**out)


THEORIES: dict[str, type[Theory]] = {}
RESERVED_NAMES: dict[str, str] = {}  # names no theory may take -> what holds them (``reserve_names``)


def reserve_names(names, holder: str) -> None:
    """Keep ``names`` from theories: the data layer reserves its datasets' names (``holder``, e.g.
    "a toy dataset") so that ``[data] dataset = name`` means one thing."""
    for name in names:
        RESERVED_NAMES[name] = holder


def register_theory(cls: type[Theory]) -> type[Theory]:
    """Class decorator: make ``cls`` (a frozen dataclass subclassing Theory with a ``name``)
    available by name to the config, the reference Monte Carlo and ensembles on disk."""
    if not (isinstance(cls, type) and issubclass(cls, Theory)):
        raise PhysdiffError(f"{cls!r} is not a subclass of physdiff.lattice.Theory")
    name = cls.name
    if not isinstance(name, str) or not name.isidentifier():
        raise PhysdiffError(f"theory name {name!r} must be an identifier (letters, digits, underscores)")
    if name in RESERVED_NAMES:
        raise PhysdiffError(f"theory name {name!r} is taken by {RESERVED_NAMES[name]}; choose another")
    if cls.action is Theory.action:
        raise PhysdiffError(f"theory {name!r} must define action(phi)")
    for f in fields(cls):
        if not f.metadata.get("theory"):
            raise PhysdiffError(f"theory {name!r}: declare parameter {f.name!r} with physdiff.lattice.param(...)")
    if "L" in {f.name for f in fields(cls)}:
        raise PhysdiffError(f"theory {name!r}: 'L' is the lattice size, not a parameter name")
    THEORIES[name] = cls
    return cls


THEORY_FILES: dict[str, dict] = {}  # theory name -> {"path", "sha256"} of the user's file that registered it
_PLUGINS = {"loaded": False}


def load_plugins() -> None:
    """Import, once, the installed packages that register theories through the entry-point group
    ``physdiff.theories`` (each entry point names a module that calls :func:`register_theory`)."""
    if _PLUGINS["loaded"]:
        return
    _PLUGINS["loaded"] = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="physdiff.theories"):
        try:
            ep.load()
        except Exception as exc:  # a plug-in's own error, whatever it is, in one line
            raise PhysdiffError(f"the installed theory plug-in {ep.name!r} ({ep.value}) failed to load: "
                                f"{type(exc).__name__}: {exc}") from None


def load_theory_file(path) -> tuple[str, ...]:
    """Import a user's Python file that registers theories (``@register_theory``), check each
    (:func:`check_theory`), and return their names. The file's SHA-256 is kept
    (``THEORY_FILES``): a run trained on one of its theories records it, and refuses another file.
    A file that does not load, registers nothing, redefines a theory it did not define, or
    whose theory fails its check is one line naming the file and what is wrong."""
    import hashlib
    from pathlib import Path

    p = Path(path)
    if p.suffix != ".py" or not p.is_file():
        raise PhysdiffError(f"theory file {str(path)!r} " + ("does not exist" if not p.exists() else
                            "is not a Python file (.py)"))
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    same = [n for n, rec in THEORY_FILES.items() if rec["sha256"] == sha]
    if same:  # loaded already (the command line and a run may both name it)
        return tuple(same)
    load_plugins()
    before = dict(THEORIES)
    try:
        return _load_file(p, sha, before)
    except PhysdiffError:  # nothing of a broken file stays registered
        THEORIES.clear()
        THEORIES.update(before)
        for name in [n for n, rec in THEORY_FILES.items() if rec["sha256"] == sha]:
            del THEORY_FILES[name]
        raise


def _load_file(p, sha: str, before: dict) -> tuple[str, ...]:
    import importlib.util
    import sys

    module_name = f"physdiff_theory_file_{sha[:16]}"
    spec = importlib.util.spec_from_file_location(module_name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    except PhysdiffError as exc:
        sys.modules.pop(module_name, None)
        raise PhysdiffError(f"theory file {str(p)!r}: {exc}") from None
    except Exception as exc:  # the user's code: whatever it raises, in one line
        sys.modules.pop(module_name, None)
        raise PhysdiffError(f"theory file {str(p)!r} failed to load: {type(exc).__name__}: {exc}") from None
    new = tuple(n for n, cls in THEORIES.items() if before.get(n) is not cls)
    redefined = [n for n in new if n in before]
    if redefined:
        raise PhysdiffError(f"theory file {str(p)!r} redefines theory {redefined[0]!r}, which "
                            f"{THEORY_FILES.get(redefined[0], {}).get('path', 'physdiff or an installed package')} "
                            "already defines; give the new theory another name")
    if not new:
        raise PhysdiffError(f"theory file {str(p)!r} registers no theory; decorate its theory class with "
                            "@physdiff.lattice.register_theory")
    for name in new:
        THEORY_FILES[name] = {"path": str(p), "sha256": sha}
        check_theory(THEORIES[name])
    return new


def theory_source(name: str) -> dict | None:
    """{"name", "path", "sha256"} of the user's theory file that registered theory ``name``; None
    for a theory of physdiff's, of an installed package or registered from Python."""
    source = THEORY_FILES.get(name)
    return None if source is None else {"name": name, **source}


def check_theory_source(recorded: dict, where: str) -> None:
    """A run (or ensemble) at ``where`` made from a user's theory file (``recorded``: its
    :func:`theory_source`) is read with that file's theory: loaded, and the same file."""
    name = recorded.get("name")
    if not is_theory(name):
        raise PhysdiffError(f"{where} was made with theory {name!r} from the file {recorded.get('path')!r}; give that "
                            "file with --theory-file (or load it with physdiff.lattice.load_theory_file)")
    now = THEORY_FILES.get(name)
    if now is not None and now["sha256"] != recorded.get("sha256"):
        raise PhysdiffError(f"{where} was made with theory {name!r} from a file with SHA-256 "
                            f"{str(recorded.get('sha256'))[:12]}…, not the file {now['path']!r} given "
                            f"({now['sha256'][:12]}…); give the file it was made with")


def _where(cls) -> str:
    source = THEORY_FILES.get(cls.name)
    return f"theory {cls.name!r}" + (f" ({source['path']})" if source else "")


def check_theory(cls: type[Theory], L: int = 4, values: dict | None = None) -> None:
    """Try a theory on a small batch (3 random configurations of an L×L lattice, at its defaults
    or ``values``): the action must return one finite number per configuration and the force
    (continuous fields) finite values of the field's shape. A theory that fails is one line
    naming it, its file, and what is wrong."""
    where = _where(cls)
    try:
        theory = cls(**(values or {}))
    except Exception as exc:
        raise PhysdiffError(f"{where}: its parameters do not make a theory ({type(exc).__name__}: {exc})") from None
    shape = (3, *theory.field_shape(L))
    gen = torch.Generator().manual_seed(0)
    if cls.discrete is not None:
        spins = torch.tensor(cls.discrete, dtype=torch.float64)
        x = spins[torch.randint(len(spins), shape, generator=gen)]
    else:
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
    for what, call, want in (("action", theory.action, (3,)), ("force", theory.force, shape)):
        if what == "force" and cls.discrete is not None:
            continue
        try:
            out = call(x)
        except Exception as exc:
            raise PhysdiffError(f"{where}: its {what} raised {type(exc).__name__}: {exc}") from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            must = "one number per configuration, (B,)" if what == "action" else "the shape of the field"
            raise PhysdiffError(f"{where}: its {what} returned {got} for a batch of configurations {shape}; it must "
                                f"return {must}")
        if not torch.isfinite(out).all():
            raise PhysdiffError(f"{where}: its {what} is not finite (nan or inf) on random configurations of the "
                                f"{L}×{L} lattice; physdiff needs a finite action everywhere")


def theory_names() -> tuple[str, ...]:
    load_plugins()
    return tuple(THEORIES)


def get_theory(name) -> type[Theory]:
    """The registered theory class ``name``, or a one-line error listing the registered ones."""
    load_plugins()
    if not isinstance(name, str) or name not in THEORIES:
        import difflib

        close = difflib.get_close_matches(str(name), list(THEORIES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PhysdiffError(f"unknown lattice model {name!r}{hint}; allowed: {', '.join(THEORIES)} (a theory of "
                            "your own: give its file with --theory-file FILE)")
    return THEORIES[name]


def is_theory(name) -> bool:
    load_plugins()
    return isinstance(name, str) and name in THEORIES


def theory_from_params(params) -> Theory:
    """The theory of an ensemble's JSON ``{"model": name, parameter: value, ...}``, every value checked."""
    if not isinstance(params, dict):
        raise PhysdiffError(f"ensemble parameters must be a table, got {type(params).__name__}")
    values = {k: v for k, v in params.items() if k != "model"}
    return get_theory(params.get("model")).from_values(values, "params.")


def make_theory(name: str, L: int, values: dict | None = None, prefix: str = "theory.") -> Theory:
    """The theory ``name`` with ``values`` on an L×L lattice, parameters and L checked and the
    law checked for normalisability (``Theory.validate``)."""
    check_lattice_size(f"{prefix}L", L)
    cls = get_theory(name)
    theory = cls.from_values(values or {}, prefix, also=("L",))
    theory.validate(L)
    if not cls.__module__.startswith("physdiff."):  # a user's theory: tried before any work
        check_theory(cls, L, {k: v for k, v in theory.params.items() if k != "model"})
    return theory


__all__ = [
    "THEORIES",
    "Theory",
    "all_neighbours",
    "check_number",
    "check_theory",
    "get_theory",
    "is_theory",
    "load_plugins",
    "load_theory_file",
    "make_theory",
    "param",
    "random_lattice_symmetry",
    "register_theory",
    "reserve_names",
    "theory_from_params",
    "theory_names",
    "theory_source",
]

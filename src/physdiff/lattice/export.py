"""An ensemble's per-configuration measurements for pyerrors (Joswig, Kuberski, Kuhlmann &
Neuendorf 2023, https://github.com/fjosw/pyerrors): every primary of ``observables.primaries``
as a pyerrors ``Obs`` whose replicas are the ensemble's chains (``NAME|r0``, ``NAME|r1``, ...),
written in pyerrors' JSON format (gzip), which ``pyerrors.input.json.load_json`` reads back.

The primaries, in this order (each tagged with its name): M, |M|, M², M⁴, the theory's density s
(S/V; E/V for Ising), and g(r) = (1/V) Σ_x φ_x φ_{x+r} for r = 0..L/2 (averaged over both axes,
before the subtraction of ⟨M⟩²: the connected G(r) is ``g[r] - M**2`` in pyerrors, a derived
observable with its error propagated). Configuration numbers are consecutive measurements
(1..n per chain), so pyerrors' τ_int is in measurements, as physdiff's is."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np

from ..errors import PhysdiffError


def import_pyerrors():
    """The pyerrors module, or a one-line PhysdiffError saying how to install it."""
    try:
        with warnings.catch_warnings():  # pyerrors imports scipy.odr, deprecated in SciPy 1.17
            warnings.simplefilter("ignore", DeprecationWarning)
            import pyerrors
            import pyerrors.input.json
    except ImportError:
        raise PhysdiffError("the pyerrors export needs the pyerrors package, which is not installed: "
                            "pip install pyerrors") from None
    return pyerrors


# stored in the file's description, so that it reads without physdiff at hand
CONVENTION = ("M = (1/V) sum_x phi_x per configuration; S/V the theory's density (E/V for Ising); g(r) = (1/V) "
              "sum_x phi_x phi_{x+r} averaged over both axes, not connected: G(r) = g(r) - M**2; replicas NAME|r<k> "
              "are the chains; configuration numbers are consecutive measurements")


def pyerrors_output(path: str | Path, overwrite: bool) -> Path:
    """The path of a pyerrors export: a new (or, with ``overwrite``, replaced) gzipped JSON
    OUT.json.gz in an existing folder, pyerrors installed."""
    from ..checkpoint import new_output

    out = Path(path)
    if not out.name.endswith(".json.gz") or out.name == ".json.gz":
        raise PhysdiffError(f"pyerrors output (--pyerrors) {str(path)!r} must end in .json.gz (pyerrors' gzipped JSON)")
    if not out.parent.is_dir():
        raise PhysdiffError(f"folder {str(out.parent)!r} for the pyerrors output (--pyerrors) {str(path)!r} "
                            "does not exist")
    new_output(out, overwrite)
    import_pyerrors()
    return out


PYERRORS_MIN_PER_REPLICA = 5  # pyerrors' Obs refuses a replica of fewer measurements


def check_exportable(x: np.ndarray, chains: int, where: str = "the ensemble", theory=None) -> None:
    """An ensemble pyerrors can hold: at least ``PYERRORS_MIN_PER_REPLICA`` configurations per
    chain (each chain is a replica), of a scalar field (the exported primaries are M, |M|, ...;
    a ``theory`` with observables of its own, such as U(1), is refused), or a PhysdiffError saying
    so — before any work, not pyerrors' own ValueError after it."""
    if theory is not None and theory.observables(x[:2], 1, where) is not None:
        raise PhysdiffError(f"the pyerrors export (--pyerrors) holds the scalar field's primaries (M, |M|, M², M⁴, "
                            f"S/V, G(r)); {theory.title or theory.name} ensembles are not exported yet")
    n = len(x)
    per = n // chains if chains else 0
    if per < PYERRORS_MIN_PER_REPLICA:
        raise PhysdiffError(f"the pyerrors export of {where} needs at least {PYERRORS_MIN_PER_REPLICA} configurations "
                            f"per chain (pyerrors' minimum per replica); it holds {n} in {chains} chains ({per} each): "
                            "make a longer ensemble")


def primary_names(L: int) -> list[str]:
    """The tags of the exported Obs, in the order of the file."""
    return ["M", "|M|", "M^2", "M^4", "S/V", *(f"g({r})" for r in range(L // 2 + 1))]


def pyerrors_primaries(x: np.ndarray, theory, chains: int, name: str) -> list:
    """The primaries of the module docstring of x (N, L, L), chain-major with ``chains`` chains,
    as pyerrors ``Obs`` on replicas ``name|r<k>`` (k the chain), each tagged with its name."""
    pe = import_pyerrors()
    from .observables import primaries

    if "|" in name:
        raise PhysdiffError(f"ensemble name {name!r} contains '|', which pyerrors reserves for replica names")
    check_exportable(x, chains, f"ensemble {name!r}")
    p = primaries(x, theory)
    series = [p["m"], p["abs_m"], p["m2"], p["m4"], p["s"], *(p["g"][:, r] for r in range(p["g"].shape[1]))]
    replicas = [f"{name}|r{k}" for k in range(chains)]
    out = []
    for tag, values in zip(primary_names(x.shape[-1]), series, strict=True):
        obs = pe.Obs(list(values.reshape(chains, -1)), replicas)
        obs.tag = tag
        out.append(obs)
    return out


def write_pyerrors(path: str | Path, observables: list, description: dict) -> None:
    """``observables`` in pyerrors' JSON format, gzip-compressed, written atomically
    (``checkpoint.atomic_write_bytes``): the bytes of ``pyerrors.input.json.dump_to_json(...,
    gz=True)``, which is ``create_json_string`` gzipped, without its half-written file on failure."""
    pe = import_pyerrors()
    from ..checkpoint import atomic_write_bytes, json_text

    text = pe.input.json.create_json_string(observables, json_text(description, indent=None), indent=None)
    atomic_write_bytes(path, gzip.compress(text.encode("utf-8"), mtime=0))


def export_pyerrors(path: str | Path, x: np.ndarray, theory, chains: int, name: str, params: dict) -> str:
    """Write the primaries of x (:func:`pyerrors_primaries`) to ``path``; returns the summary line."""
    obs = pyerrors_primaries(x, theory, chains, name)
    tags = primary_names(x.shape[-1])
    description = {"ensemble": name, "params": params, "L": x.shape[-1], "chains": chains,
                   "observables": tags, "convention": CONVENTION}
    write_pyerrors(path, obs, description)
    return f"wrote {len(obs)} pyerrors Obs ({', '.join(tags[:5])}, g(r) r = 0..{x.shape[-1] // 2}; {chains} " \
           f"replicas {name}|r0..) to {path}"


def export_ensemble(path: Path, data: dict, result: dict, name: str, *, overwrite: bool = False) -> str:
    """The ensemble of an observables report (``report.observables_report``: its ``data`` and
    ``result``) exported to pyerrors' gzipped JSON at ``path`` (:func:`pyerrors_output`), under
    the lock of that file; ``name``: the ensemble's name in pyerrors. Returns the summary line."""
    from ..checkpoint import OutputLock, new_output

    check_exportable(data["x"], data["chains"][0], f"ensemble {name!r}", data["theory"])
    with OutputLock(path):
        new_output(path, overwrite)
        return export_pyerrors(path, data["x"], data["theory"], data["chains"][0], name.replace("|", "_"),
                               result["params"])


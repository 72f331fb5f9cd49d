"""Ensembles on disk, in one of two formats chosen by the file's suffix:

- ``NAME.npy`` (the default): (N, L, L) float32 ((N, C, L, L) for a field of C components; Ising
  spins exactly ±1) with ``NAME.json`` beside it holding the theory's parameters
  (``{"params": {"model": name, parameter: value, ...}}``) and how the ensemble was made;
- ``NAME.h5`` (HDF5, needs h5py): dataset ``configs`` (N, L, L) float32, ``mc_time`` (N,) the
  Monte Carlo time of each configuration in sweeps of its chain, ``chain`` (N,) the chain it
  belongs to; every parameter (``model``, the couplings, ``L``, ``n``, ``chains``, ``seed``,
  burn-in and spacing in sweeps, ...) as an attribute, and the whole JSON of the ``.npy`` format as
  the attribute ``physdiff`` (nested entries, such as the hot/cold check, included).

``physdiff mcmc`` also saves the chains' final state (configurations in float64, both random
generators, HMC step; ``mc.Chains.state``) so that ``--resume`` continues the stream bit for bit:
``NAME.state.safetensors`` beside a ``.npy``, the group ``mc_state`` inside a ``.h5``. Nothing is
pickled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..checkpoint import bytes_writer, check_flat_attributes, json_text, npy_writer, write_together
from ..errors import PhysdiffError
from .theory import make_theory, theory_from_params


def check_theory_params(model: str, L: int, values: dict | None = None, prefix: str = "theory."):
    """The theory ``model`` with parameter ``values`` on an L×L lattice, or a PhysdiffError naming
    the bad value (unknown model or parameter, out of range, no normalisable law)."""
    return make_theory(model, L, values, prefix)


ENSEMBLE_SUFFIXES = (".npy", ".h5")
STATE_FORMAT = "physdiff mcmc state"


def sidecar(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def is_hdf5(path: str | Path) -> bool:
    return Path(path).suffix == ".h5"


def state_path(path: str | Path) -> Path:
    """Where the chains' state of the ensemble ``path`` lives: ``NAME.state.safetensors`` beside a
    .npy; inside the file itself for a .h5."""
    path = Path(path)
    return path if is_hdf5(path) else path.with_suffix(".state.safetensors")


def written_files(path: str | Path) -> list[Path]:
    """The files :func:`save_ensemble` writes for ``path`` with a state (``physdiff mcmc``)."""
    path = Path(path)
    return [path] if is_hdf5(path) else [path, state_path(path), sidecar(path)]


def import_h5py():
    """The h5py module, or a one-line PhysdiffError saying how to install it."""
    try:
        import h5py
    except ImportError:
        raise PhysdiffError("HDF5 ensembles (.h5) need the h5py package, which is not installed: pip install h5py "
                            "(or pip install 'physdiff[hdf5]')") from None
    return h5py


def ensemble_output(path: str | Path) -> Path:
    """An output ensemble's path: NAME.npy (with NAME.json) or NAME.h5, in an existing folder
    (h5py checked for .h5 before any work)."""
    out = Path(path)
    if out.suffix not in ENSEMBLE_SUFFIXES:  # exactly: NAME.NPY and NAME.npy would share the JSON NAME.json
        raise PhysdiffError(f"ensemble output (--out) {str(path)!r} must end in .npy or .h5 (lower case)")
    if not out.parent.is_dir():
        raise PhysdiffError(f"folder {str(out.parent)!r} for {str(path)!r} does not exist")
    if is_hdf5(out):
        import_h5py()  # before the Monte Carlo, not after it
    return out


def save_ensemble(path: str | Path, x: np.ndarray, info: dict, state: dict | None = None) -> None:
    """The ensemble, its parameters (acceptance, τ_int, ...) and, if given, the chains' ``state``
    (``mc.Chains.state``), written together: all or none (``checkpoint.write_together``), the JSON
    strict (no NaN). The format follows the suffix (.npy + .json, or .h5: module docstring)."""
    path = Path(path)
    if is_hdf5(path):
        write_together([(path, _h5_writer(x, info, state))])
        return
    outputs = [(path, npy_writer(x))]
    if state is not None:
        outputs.append((state_path(path), _state_writer(state)))
    write_together([*outputs, (sidecar(path), bytes_writer((json_text(info) + "\n").encode()))])


def _state_tensors(state: dict) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    arrays = {"x": np.ascontiguousarray(state["x"], dtype=np.float64),
              "torch_rng": np.ascontiguousarray(state["torch_rng"], dtype=np.uint8),
              "accepted": np.ascontiguousarray(state["accepted"], dtype=np.float64)}
    meta = {"format": STATE_FORMAT, "numpy_rng": json.dumps(state["numpy_rng"]), "eps": repr(float(state["eps"])),
            "n_leap": str(int(state["n_leap"]))}
    return arrays, meta


def _state_writer(state: dict):
    from safetensors.numpy import save

    arrays, meta = _state_tensors(state)
    return bytes_writer(save(arrays, metadata=meta))


def _h5_writer(x: np.ndarray, info: dict, state: dict | None):
    from .mc import mc_times

    h5py = import_h5py()
    chains = info.get("chains", 1)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("configs", data=np.ascontiguousarray(x, dtype=np.float32))
            fh.create_dataset("mc_time", data=mc_times(info, len(x)))
            fh.create_dataset("chain", data=np.repeat(np.arange(chains, dtype=np.int64), len(x) // chains))
            flat = dict(info.get("params", {})) | {k: v for k, v in info.items() if k != "params"}
            for key, value in flat.items():
                if isinstance(value, (str, bool, int)) or (isinstance(value, float) and np.isfinite(value)):
                    fh.attrs[key] = value  # scalars for any HDF5 reader; nested entries in "physdiff" only
            fh.attrs["physdiff"] = json_text(info, indent=None)
            if state is not None:
                arrays, meta = _state_tensors(state)
                group = fh.create_group("mc_state")
                for key, value in arrays.items():
                    group.create_dataset(key, data=value)
                group.attrs.update(meta)
    return write


def load_state(path: str | Path) -> dict:
    """The chains' state saved with the ensemble ``path`` (:func:`save_ensemble`), as ``mc.Chains.state``
    gives it; a PhysdiffError when there is none or it is damaged."""
    path = Path(path)
    where = state_path(path)
    try:
        if is_hdf5(path):
            h5py = import_h5py()
            with h5py.File(path, "r") as fh:
                if "mc_state" not in fh:
                    raise PhysdiffError(f"ensemble {str(path)!r} holds no Monte Carlo state (no group mc_state): it "
                                        "was not written by physdiff mcmc, so it cannot be resumed")
                group = fh["mc_state"]
                arrays = {k: group[k][()] for k in ("x", "torch_rng", "accepted")}
                meta = {k: str(v) for k, v in group.attrs.items()}
        else:
            if not where.is_file():
                raise PhysdiffError(f"ensemble {str(path)!r} has no Monte Carlo state {str(where)!r}: it was not "
                                    "written by physdiff mcmc (or the state was removed), so it cannot be resumed")
            from safetensors import safe_open

            with safe_open(str(where), framework="numpy") as fh:
                meta = dict(fh.metadata() or {})
                arrays = {k: fh.get_tensor(k) for k in fh.keys()}
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
        state = {"x": arrays["x"], "torch_rng": arrays["torch_rng"], "accepted": arrays["accepted"],
                 "numpy_rng": json.loads(meta["numpy_rng"]), "eps": float(meta["eps"]), "n_leap": int(meta["n_leap"])}
        import torch

        torch.Generator().set_state(torch.from_numpy(np.asarray(state["torch_rng"], dtype=np.uint8)))
        np.random.PCG64().state = state["numpy_rng"]  # both generators' states are ones they accept
        if not (np.isfinite(state["x"]).all() and np.isfinite(state["eps"]) and state["eps"] > 0
                and state["n_leap"] >= 1):
            raise ValueError("its configurations or HMC step are not finite and positive")
        return state
    except PhysdiffError:
        raise
    except Exception as exc:  # a damaged or foreign file: whatever the reader raised, one line
        raise PhysdiffError(f"Monte Carlo state {str(where)!r} cannot be read ({type(exc).__name__}: {exc})") from None


def _read_h5(path: Path) -> tuple[np.ndarray, dict]:
    """(configs, info) of an HDF5 ensemble: info from the ``physdiff`` attribute, or, in a file
    written elsewhere, from the attributes ``model``, the theory's parameters and ``chains``."""
    h5py = import_h5py()
    try:
        with h5py.File(path, "r") as fh:
            configs = fh.get("configs")
            if not isinstance(configs, h5py.Dataset):
                raise PhysdiffError(f"ensemble file {str(path)!r} has no dataset 'configs' (N, L, L); write the "
                                    "configurations there (physdiff mcmc --out NAME.h5 does)")
            x = configs[()]
            attrs = {k: _plain(v) for k, v in fh.attrs.items()}
    except PhysdiffError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise PhysdiffError(f"ensemble file {str(path)!r} is not a readable HDF5 file ({exc})") from None
    if "physdiff" in attrs:
        try:
            info = json.loads(attrs["physdiff"])
        except (ValueError, TypeError, RecursionError) as exc:
            raise PhysdiffError(f"ensemble {str(path)!r}: its attribute 'physdiff' is not valid JSON: {exc}") from None
        if not isinstance(info, dict):
            raise PhysdiffError(f"ensemble {str(path)!r}: its attribute 'physdiff' holds a JSON "
                                f"{type(info).__name__}; expected an object with \"params\"")
        check_flat_attributes(attrs, info, f"ensemble {str(path)!r}")
        return x, info
    info = {k: attrs[k] for k in ("chains", "L", "n") if k in attrs}
    if "model" in attrs:
        from .theory import get_theory

        names = get_theory(attrs["model"]).parameters()
        info["params"] = {"model": attrs["model"], **{k: attrs[k] for k in names if k in attrs}}
    return x, info


def _plain(value):
    """An HDF5 attribute as a Python value: numpy scalars made plain, fixed-length strings (bytes,
    as other programs often write them) decoded."""
    value = value.item() if isinstance(value, np.generic) else value
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def load_ensemble(path: str | Path) -> tuple[np.ndarray, dict]:
    """(x (N, L, L) float64, info) of an ensemble file (.npy with its .json, or .h5), validated."""
    path = Path(path)
    if path.is_dir():
        raise PhysdiffError(f"ensemble file {str(path)!r} is a folder; give an (N, L, L) .npy or .h5 file")
    if not path.is_file():
        raise PhysdiffError(f"ensemble file {str(path)!r} does not exist")
    from ..checkpoint import MAX_ABS_VALUE, read_npy

    if is_hdf5(path):
        x, info = _read_h5(path)
    else:
        x = read_npy(path, "ensemble file", "write configurations with numpy.save or physdiff mcmc")
        info = _read_sidecar(path)
    if (x.dtype.kind not in "fiu" or x.ndim not in (3, 4) or x.shape[-1] != x.shape[-2] or x.shape[-1] < 2
            or len(x) < 2):
        raise PhysdiffError(f"ensemble file {str(path)!r} has shape {x.shape} and dtype {x.dtype}; expected "
                            "(N, L, L) numbers with N >= 2 and L >= 2 (or (N, C, L, L) for C components)")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise PhysdiffError(f"ensemble file {str(path)!r} contains {int((~np.isfinite(x)).sum())} NaN/inf values")
    if np.abs(x).max() > MAX_ABS_VALUE:
        raise PhysdiffError(f"ensemble file {str(path)!r} holds values beyond ±{MAX_ABS_VALUE:g} (largest "
                            f"{np.abs(x).max():.3g}); their moments overflow, so no observable of it can be given")
    params = info.get("params")
    if not isinstance(params, dict):
        where = ("its attributes must hold 'model' and the theory's parameters (or 'physdiff', the JSON of an "
                 "ensemble)" if is_hdf5(path) else f"{str(sidecar(path))!r} must hold")
        raise PhysdiffError(f"ensemble {str(path)!r} has no parameters: {where} "
                            '{"params": {"model": "phi4", "kappa": ..., "lam": ...}} '
                            'or {"params": {"model": "ising", "beta": ...}}')
    theory = theory_from_params(params)
    theory.validate(x.shape[-1])
    if tuple(x.shape[1:]) != theory.field_shape(x.shape[-1]):
        raise PhysdiffError(f"ensemble file {str(path)!r} has configurations of shape {x.shape[1:]}; theory "
                            f"{theory.name!r} has fields of shape {theory.field_shape(x.shape[-1])}")
    theory.check_samples(x, repr(str(path)))
    check_claims(info, x, repr(str(path)))
    return x, info


def _read_sidecar(path: Path) -> dict:
    meta = sidecar(path)
    info = {}
    if meta.is_file():
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise PhysdiffError(f"ensemble parameters {str(meta)!r} are not valid JSON: {exc}") from None
        except RecursionError:
            raise PhysdiffError(f"ensemble parameters {str(meta)!r} are nested too deeply to be an ensemble's JSON "
                                "(a JSON object with \"params\")") from None
        if not isinstance(info, dict):
            raise PhysdiffError(f"ensemble parameters {str(meta)!r} hold a JSON {type(info).__name__}; expected an "
                                'object such as {"params": {"model": "phi4", "kappa": ..., "lam": ...}}')
    return info


def check_claims(info: dict, x: np.ndarray, where: str) -> None:
    """What an ensemble's JSON says about its array must be true of it: ``L`` its lattice size,
    ``n`` its number of configurations, ``chains`` a positive integer that divides it (the
    configurations are chain-major)."""
    n, L = len(x), x.shape[-1]
    for key, actual in (("L", L), ("n", n)):
        if key in info and (isinstance(info[key], bool) or info[key] != actual):
            raise PhysdiffError(f"ensemble {where}: its JSON says {key} = {info[key]!r} but the array has "
                                f"{key} = {actual} (shape {x.shape}); the JSON belongs to another file")
    rows = info.get("chain_index")
    if rows is not None and (not isinstance(rows, list) or len(rows) != n):
        raise PhysdiffError(f"ensemble {where}: its JSON's chain_index must list one proposal per configuration "
                            f"({n}); it does not, so the JSON belongs to another file")
    chains = info.get("chains", 1)
    if isinstance(chains, bool) or not isinstance(chains, int) or chains < 1 or n % chains:
        raise PhysdiffError(f"ensemble {where}: chains = {chains!r} in its JSON must be a positive integer that "
                            f"divides the {n} configurations")


def ensemble_chains(info: dict) -> int:
    """The number of chains of an ensemble checked by :func:`load_ensemble` (1 when not recorded)."""
    return info.get("chains", 1)

"""The run directory: atomic writes, weights in safetensors, a resumable training state.

Layout of ``RUN/`` (DESIGN.md):
  config.toml          resolved configuration
  state.safetensors    everything --resume needs, in one file written atomically: model,
                       EMA, optimizer moments, RNG state, normaliser; step and optimizer
                       hyper-parameters as JSON metadata
  model.safetensors    raw weights;  ema.safetensors  EMA weights (+ normaliser in both)
  metrics.csv          step, loss, lr, grad_norm, ... as training goes
  physdiff-run.json    the marker that says "a physdiff run" (written first by train)
  provenance.json      what made the run: one session per train or train --resume (provenance.py)
Nothing here unpickles: safetensors holds tensors only and JSON holds the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .errors import PhysdiffError

STATE_FILE = "state.safetensors"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.csv"
LOCK_FILE = ".lock"
MARKER_FILE = "physdiff-run.json"
THEORY_FILE = "theory.json"  # a run of a user's theory file: its name, path and SHA-256 (``lattice/theory.py``)
PROVENANCE_FILE = "provenance.json"
PROVENANCE_FORMAT = "physdiff provenance"
TMP_SUFFIX = ".tmp"
MARKER_FORMAT = "physdiff run"
VALIDATION_FILE = "validation.npy"  # the rows of a data file held out of training, (K,) int64
DATA_FILE = "data.npy"  # the training data of a run trained from an array in memory, float64
TIMESTEPS_FILE = "timesteps.json"  # the visited timesteps fitted to the run (fit-steps, fitted_steps.py)
DISTILLED_FILE = "distilled.safetensors"  # the run's few-step students (distill, distill.py)
# every name physdiff itself writes into a run directory (train, evaluate, plot, fit-steps, distill, demo): replacing
# or cleaning up a run removes these and its temporaries, never anything else
FIGURE_STEMS = ("samples", "forward", "reverse", "loss", "guidance", "nearest", "histograms", "correlator",
                "configurations")
RUN_FILES = frozenset({CONFIG_FILE, METRICS_FILE, STATE_FILE, MODEL_FILE, EMA_FILE, LOCK_FILE, MARKER_FILE, THEORY_FILE,
                       VALIDATION_FILE, DATA_FILE, PROVENANCE_FILE, TIMESTEPS_FILE, ".timesteps.lock",
                       DISTILLED_FILE, ".distilled.lock",
                       "evaluation.json", *(f"{name}.png" for name in FIGURE_STEMS)})
# the figures of `plot` in every format with the table of their numbers (.csv) beside them, and the report of
# `evaluate`; for a coupling-conditioned run each is tagged with the coupling it was made at (histograms_kappa0.27.png)
_TAG = r"(?:_[A-Za-z][A-Za-z0-9_]*?[-+]?[0-9][-+.0-9e]*)?"  # LoadedRun.file_tag
_PLOT_AND_EVALUATE = re.compile(rf"(?:(?:{'|'.join(FIGURE_STEMS)}){_TAG}\.(?:png|pdf|svg|csv)"
                                rf"|evaluation{_TAG}\.json)\Z")


def is_run_file(name: str) -> bool:
    """Whether physdiff writes a file of this name into a run (train, evaluate, plot, demo):
    :data:`RUN_FILES`, and the figures, tables and reports of plot and evaluate."""
    return name in RUN_FILES or bool(_PLOT_AND_EVALUATE.match(name))


@contextlib.contextmanager
def atomic_output(path: str | Path):
    """Yield a temporary path in ``path``'s folder to write; on success the file is fsynced,
    given the mode the umask allows (mkstemp makes 0600) and renamed to ``path``, and the folder
    fsynced; on any exception it is removed. A crash at any moment leaves either the old file or
    the new one (and a temporary that ``clear_stale_temporaries`` removes)."""
    path = Path(path)
    # a short temporary name when the final one is long, so the suffix cannot exceed NAME_MAX
    prefix = f".{path.name}." if len(path.name.encode()) < 200 else ".physdiff-"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def npy_stream(path: str | Path, shape: tuple[int, ...], dtype: str = "float32"):
    """An (N, ...) .npy file written in pieces and published atomically: yields a writable
    memory map of ``shape``; rows are written to disk as they are filled, so an array larger
    than memory can be produced chunk by chunk."""
    import numpy as np

    with atomic_output(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        try:
            yield arr
            arr.flush()
        finally:
            del arr


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def clear_stale_temporaries(folder: str | Path) -> list[str]:
    """Remove the temporary files an interrupted atomic write (kill -9) left in ``folder``."""
    removed = []
    for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p.name)
    return removed


def is_temporary(name: str) -> bool:
    """A temporary of :func:`atomic_output` (``.NAME.XXXX.tmp``)."""
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def write_marker(run: str | Path) -> None:
    """RUN/physdiff-run.json: the mark of a folder that physdiff's train created."""
    atomic_write_bytes(Path(run) / MARKER_FILE, (json.dumps({"format": MARKER_FORMAT, "version": 1}) + "\n").encode())


def read_provenance(run: str | Path) -> list[dict]:
    """The sessions recorded in RUN/provenance.json, oldest first: [] when there is none (a run
    made before physdiff kept it); an unreadable file is reported and counts as none."""
    import warnings

    path = Path(run) / PROVENANCE_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        sessions = data["sessions"]
        if data.get("format") != PROVENANCE_FORMAT or not all(isinstance(s, dict) for s in sessions):
            raise ValueError("not a physdiff provenance file")
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        warnings.warn(f"{str(path)!r} is unreadable ({exc}); the sessions it held are not kept", stacklevel=2)
        return []
    return sessions


def write_provenance(run: str | Path, sessions: list[dict]) -> None:
    """RUN/provenance.json, atomically: ``{"format", "version", "sessions": [record, ...]}``."""
    text = json_text({"format": PROVENANCE_FORMAT, "version": 1, "sessions": sessions})
    atomic_write_bytes(Path(run) / PROVENANCE_FILE, (text + "\n").encode())


def has_marker(run: str | Path) -> bool:
    """Whether ``run`` holds a readable physdiff-run.json marker."""
    path = Path(run) / MARKER_FILE
    if path.is_symlink() or not path.is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == MARKER_FORMAT
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def foreign_entries(run: str | Path) -> list[str]:
    """The entries of ``run`` that physdiff does not write into a run: a user's files, folders,
    links (sorted names)."""
    out = []
    for p in Path(run).iterdir():
        ours = (is_run_file(p.name) or is_temporary(p.name)) and p.is_file() and not p.is_symlink()
        if not ours:
            out.append(p.name)
    return sorted(out)


def remove_run_files(run: str | Path, *, remove_folder: bool = True) -> None:
    """Delete physdiff's own files (:func:`is_run_file`, temporaries) from ``run`` and, if it is then
    empty and ``remove_folder``, the folder. Anything else in it is left alone."""
    run = Path(run)
    if not run.is_dir():
        return
    for p in run.iterdir():
        if (is_run_file(p.name) or is_temporary(p.name)) and (p.is_symlink() or p.is_file()):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    if remove_folder:
        with contextlib.suppress(OSError):  # not empty: a user's file stays, and its folder with it
            run.rmdir()


def save_npy(path: str | Path, array, dtype: str = "float32") -> None:
    """A .npy file, written atomically: float32 for samples and latents (the exchange format),
    float64 for log-densities."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=dtype))
    atomic_write_bytes(path, buf.getvalue())


FIGURE_FORMATS = ("png", "pdf", "svg")


def figure_bytes(fig, fmt: str = "png", dpi: int = 130) -> bytes:
    """A matplotlib Figure as the bytes of a PNG, PDF or SVG file; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    if fmt not in FIGURE_FORMATS:
        raise PhysdiffError(f"figure format {fmt!r} is not one of {', '.join(FIGURE_FORMATS)}")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig, path: str | Path, dpi: int = 130) -> None:
    """A matplotlib Figure as PNG, PDF or SVG (by the file's suffix; PNG without one), written
    atomically; the figure is closed."""
    atomic_write_bytes(path, figure_bytes(fig, Path(path).suffix[1:].lower() or "png", dpi))


def atomic_save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """safetensors file written atomically (tensors moved to CPU, made contiguous)."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(clean, metadata=metadata))


def read_tensors(path: str | Path, what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; PhysdiffError if missing, truncated or corrupt.
    A pickle or any other format is rejected, never executed."""
    path = Path(path)
    if not path.is_file():
        raise PhysdiffError(f"{what} {str(path)!r} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise PhysdiffError(f"{what} {str(path)!r} is corrupt or not a safetensors file ({exc}); "
                            "restore it from a backup or retrain") from None
    return tensors, metadata


def tensors_metadata(path: str | Path) -> dict[str, str]:
    """The JSON metadata of a safetensors file, its tensors left unread; {} for a file that is
    missing or unreadable (whoever needs the tensors reports that, :func:`read_tensors`)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return {}


def learnt_fingerprint(run: str | Path, learnt: dict | None = None) -> str | None:
    """The SHA-256 fingerprint of the training rows run ``run`` learnt (``data_fingerprint``):
    from its weights' ``data`` record ``learnt`` when that holds it, else from its training
    state; None for a run that recorded none."""
    if isinstance(learnt, dict) and isinstance(learnt.get("fingerprint"), str):
        return learnt["fingerprint"]
    value = tensors_metadata(Path(run) / STATE_FILE).get("data_fingerprint")
    return value if isinstance(value, str) else None


def check_flat_attributes(attrs: dict, info: dict, where: str) -> None:
    """An HDF5 ensemble's flat attributes (``kappa``, ``chains``, ... for any HDF5 reader) agree with
    its ``physdiff`` JSON attribute ``info`` (what physdiff reads): each scalar of ``info`` and of
    its ``params`` that is also a flat attribute must have the same value there, else one line
    naming the attribute and both values (the file was edited, or written by another program, and
    the two say different things: which of them holds is not for physdiff to guess).
    ``lattice/ensemble.py`` calls it on reading a .h5; its writer writes both from one dict."""
    import math

    flat = dict(info.get("params", {})) if isinstance(info.get("params"), dict) else {}
    flat |= {k: v for k, v in info.items() if k != "params"}
    for key, want in flat.items():
        if key == "physdiff" or key not in attrs:
            continue
        got = attrs[key]
        if isinstance(want, bool) or isinstance(got, bool):
            same = type(want) is type(got) and want == got
        elif isinstance(want, str) or isinstance(got, str):
            same = want == got
        elif isinstance(want, (int, float)) and isinstance(got, (int, float)):
            same = want == got or (math.isnan(want) and math.isnan(got))
        else:
            continue  # lists and tables live in the JSON attribute only
        if not same:
            raise PhysdiffError(f"{where}: its attribute {key!r} = {got!r} disagrees with its 'physdiff' record, which "
                                f"says {key} = {want!r}; the file was edited or written by another program: fix the "
                                "attribute that is wrong (or delete the flat one) and read it again")


def load_module_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str, prefix: str = ""):
    """Load ``prefix``-ed tensors into ``module`` only if every name and shape matches: a
    checkpoint of another architecture or data shape is refused, never partly loaded."""
    own = module.state_dict()
    got = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing, unexpected = sorted(set(own) - set(got)), sorted(set(got) - set(own))
    if missing or unexpected:
        raise PhysdiffError(f"{where} does not match the model architecture "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); "
                            "it was written for another network configuration")
    for k, v in own.items():
        if got[k].shape != v.shape:
            raise PhysdiffError(f"{where}: tensor {k!r} has shape {tuple(got[k].shape)}, the model expects "
                                f"{tuple(v.shape)}; it was written for another data shape or network size")
    module.load_state_dict({k: got[k].to(v.dtype) for k, v in own.items()})


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """Optimizer state as flat tensors ``optim.<param index>.<name>`` plus param_groups as JSON."""
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            tensors[f"optim.{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, json.dumps(sd["param_groups"])


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups_json: str):
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(groups_json)})


class _Flock:
    """An flock held on ``self.fh`` (set by a subclass's ``acquire``) until released."""

    fh = None

    def release(self):
        if self.fh is not None:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class RunLock(_Flock):
    """An exclusive lock on RUN/.lock for as long as a process trains into RUN. A second
    process asking for the same run is refused rather than overwriting it."""

    def __init__(self, run: Path):
        self.path = Path(run) / LOCK_FILE
        self.fh = None

    def acquire(self):
        self.fh = open(self.path, "a")
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            self.fh = None
            raise PhysdiffError(f"run directory {str(self.path.parent)!r} is in use by another "
                                "physdiff process; wait for it or choose another run directory") from None
        return self


class OutputLock(_Flock):
    """An exclusive lock on an output file for as long as a command writes it: a second process
    naming the same output (or the same ensemble's JSON) is refused with one line instead of
    both writing it. The lock is ``.NAME.lock`` beside the output, held with flock (released by
    the kernel if the process dies, so a kill -9 never leaves a stale lock) and removed on exit."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.target = path
        self.path = path.with_name(f".{path.stem}.lock")  # NAME.npy and its NAME.json share a lock
        self.fh = None

    def acquire(self):
        while True:
            fh = open(self.path, "a")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                raise PhysdiffError(f"output {str(self.target)!r} is being written by another physdiff process "
                                    f"(it holds {str(self.path)!r}); wait for it or choose another output") from None
            try:  # the holder before us may have removed the file we opened: lock the one on disk
                same = os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fh = fh
                return self
            fh.close()

    def release(self):
        """Remove the lock file, then unlock it: unlinked while still held (and only if the file at
        the path is still the one held), so that a process waiting on the old file finds, once it
        holds it, that it is no longer on disk and locks a fresh one (:meth:`acquire`). A SIGTERM or
        Ctrl-C of the command releases it too; only a kill -9 leaves the (empty) file, unlocked,
        and the next command naming the output locks and removes it."""
        if self.fh is not None:
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == os.fstat(self.fh.fileno()).st_ino:
                    os.unlink(self.path)
        super().release()


def lock_outputs(*paths: Path | None) -> contextlib.ExitStack:
    """One :class:`OutputLock` per distinct lock among ``paths`` (None skipped; NAME.npy, NAME.json
    and NAME.png share one), held until the returned stack is closed."""
    stack = contextlib.ExitStack()
    seen = set()
    try:
        for path in (Path(p) for p in paths if p is not None):
            lock = OutputLock(path)
            if lock.path.resolve() not in seen:
                seen.add(lock.path.resolve())
                stack.enter_context(lock)
    except BaseException:
        stack.close()
        raise
    return stack


def json_safe(obj):
    """``obj`` with numpy scalars and arrays made plain, and every non-finite float (an error
    that overflowed, a τ_int that has none) replaced by None: strict JSON has no NaN or inf."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or one line naming ``what`` is unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise PhysdiffError(f"{what} {str(path)!r} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PhysdiffError(f"{what} {str(path)!r} is not a JSON object")
    return data


def json_text(obj, indent: int | None = 2) -> str:
    """Strict JSON of ``obj`` (:func:`json_safe`): never NaN or Infinity, which JSON readers refuse."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_together(outputs: list[tuple[Path, object]]) -> None:
    """Write a command's outputs together: each (path, writer) calls ``writer(tmp)`` to write a
    temporary file beside ``path``; only when all are written are they renamed into place, in
    the order given (an ensemble's JSON last), so a failure (a full disk) leaves none of them and
    no earlier file of the user's is replaced by half a set."""
    staged = []
    try:
        for path, writer in outputs:
            path = Path(path)
            prefix = f".{path.name}." if len(path.name.encode()) < 200 else ".physdiff-"
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=TMP_SUFFIX)
            os.close(fd)
            staged.append((Path(tmp), path))
            writer(Path(tmp))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    for folder in {path.parent for _, path in staged}:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def npy_writer(array, dtype: str = "float32"):
    """A writer for :func:`write_together`: ``array`` as a .npy of ``dtype``."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array, dtype=dtype))
    return write


def bytes_writer(data: bytes):
    """A writer for :func:`write_together`: ``data`` as they are."""
    return lambda tmp: tmp.write_bytes(data)


def read_metrics(path: str | Path) -> tuple[dict, int]:
    """({column: float64 array}, number of lines skipped) of a run's metrics.csv. The header names
    the columns; a line that is not one number per column (binary garbage, a ragged or half-written
    row, text in a number's place) is skipped and counted, never fatal: the figure and the resume
    keep every row that can be read."""
    import math

    import numpy as np

    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    lines = text.splitlines()
    if not lines:
        return {}, 0
    names = [f.strip() for f in lines[0].split(",")]
    rows, skipped = [], 0
    for line in lines[1:]:
        parts = line.split(",")
        try:
            values = [float(f) for f in parts] if len(parts) == len(names) else None
        except ValueError:
            values = None
        if values is None or not all(math.isfinite(v) for v in values[:1]):
            skipped += bool(line.strip())
            continue
        rows.append(values)
    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    return {name: table[:, i] for i, name in enumerate(names)}, skipped


MAX_ABS_VALUE = 1e30  # squares of larger values overflow float32 (3.4e38) in training


def read_npy(path: Path, what: str, advice: str = "save it with numpy.save") -> np.ndarray:
    """A numeric .npy array, never unpickled: a file without the .npy header (text, safetensors,
    anything renamed .npy) or whose header declares objects (pickled data) is refused with one
    line that says what it is, and never with numpy's advice to load it with allow_pickle."""
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise PhysdiffError(f"{what} {str(path)!r} is not a NumPy .npy file (it has no .npy header); {advice}")
        fh.seek(0)
        try:
            version = np.lib.format.read_magic(fh)
            _, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                               else np.lib.format.read_array_header_2_0(fh))
        except (ValueError, OSError, EOFError, SyntaxError) as exc:
            raise PhysdiffError(f"{what} {str(path)!r} has a corrupt .npy header ({exc}); {advice}") from None
    if dtype.hasobject:
        raise PhysdiffError(f"{what} {str(path)!r} holds Python objects (dtype {dtype}), not numbers, and physdiff "
                            f"never unpickles a file; {advice}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PhysdiffError(f"{what} {str(path)!r} is not a readable .npy array ({exc}); {advice}") from None


# ---------------------------------------------------------------- output files


def npy_output(path: str, what: str = "output") -> Path:
    """An output .npy path in an existing folder."""
    out = Path(path)
    if out.suffix != ".npy":  # exactly: NAME.NPY and NAME.npy would share the JSON NAME.json
        raise PhysdiffError(f"{what} {path!r} must end in .npy (lower case)")
    if not out.parent.is_dir():
        raise PhysdiffError(f"folder {str(out.parent)!r} for {path!r} does not exist")
    return out


def new_output(path: Path, overwrite: bool) -> Path:
    """Refuse an output that is a folder, or that exists unless ``overwrite``."""
    if path.is_dir():
        raise PhysdiffError(f"output {str(path)!r} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise PhysdiffError(f"output {str(path)!r} already exists; pass overwrite=True (on the command line "
                            "--overwrite) to replace it")
    return path


def check_outputs(overwrite: bool, *paths: Path | None) -> None:
    """:func:`new_output` for each given path, and no path named twice by one command."""
    seen = set()
    for path in (p for p in paths if p is not None):
        new_output(path, overwrite)
        if path.resolve() in seen:
            raise PhysdiffError(f"{str(path)!r} is named twice as an output; give each output its own file")
        seen.add(path.resolve())


def check_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating, a result that cannot fit in this machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if nbytes > total:
        raise PhysdiffError(f"{what} need about {nbytes / 2**30:.1f} GiB, more than this machine's "
                            f"{total / 2**30:.1f} GiB of memory; ask for fewer (several files, or a smaller n)")


def recorded_held_out(run: Path, cfg) -> np.ndarray | None:
    """The held-out rows run ``run`` recorded (validation.npy); None for a run that holds none out.
    A data file's run of this version with data.validation_fraction > 0 must have them."""
    if not (cfg.data.file and cfg.data.validation_fraction > 0):
        return None
    path = run / VALIDATION_FILE
    if not path.is_file():
        raise PhysdiffError(f"run {str(run)!r} holds out data.validation_fraction = {cfg.data.validation_fraction:g} "
                            f"of its data but its record of those rows ({VALIDATION_FILE}) is missing; restore it "
                            "from a copy of the run")
    return read_npy(path, "held-out rows")


def figure_outputs(figs: dict, folder: Path, fmt: str, tag: str = "") -> list[tuple[Path, Path | None, object]]:
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


def check_figure_outputs(outputs, overwrite: bool) -> None:
    """Every figure and CSV of :func:`figure_outputs` follows the rule of every output: a file
    that exists is replaced only with ``overwrite``."""
    for path, csv_path, _ in outputs:
        new_output(path, overwrite)
        if csv_path is not None:
            new_output(csv_path, overwrite)


def write_figures(outputs) -> list[str]:
    """Each figure and its CSV of :func:`figure_outputs` written together (both or neither);
    returns a line naming the files of each."""
    from .plots import figure_table, table_csv

    lines = []
    for path, csv_path, fig in outputs:
        files = [(path, bytes_writer(figure_bytes(fig, path.suffix[1:])))]
        if csv_path is not None:
            files.append((csv_path, bytes_writer(table_csv(figure_table(fig)).encode())))
        write_together(files)
        lines.append(f"wrote {path}" + (f" and {csv_path}" if csv_path is not None else ""))
    return lines


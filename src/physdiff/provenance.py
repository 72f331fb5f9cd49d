"""What made a result: the record physdiff keeps in a run directory (``provenance.json``, one
session per ``train`` or ``train --resume``) and under ``"provenance"`` in every JSON it writes
beside samples, ensembles and evaluations.

A record (:meth:`Session.record`) holds

- ``physdiff_version`` (as ``physdiff --version`` prints it) and, when physdiff runs from a git
  checkout, ``git``: ``{"commit", "dirty"}`` of the repository that holds the package's own source
  folder (no key when it is not tracked by one, or git is missing); dirty means tracked files
  differ from the commit;
- ``versions`` of python, torch and numpy; ``device``, and on a GPU ``cuda`` (its version and the
  GPU's name); ``processes`` under torchrun;
- how it was asked for: ``command_line`` (the ``physdiff`` command) or ``call`` (the library
  function and those of its arguments that are plain values; ``other_arguments`` names the rest);
- ``host``, and ``started`` / ``ended`` in UTC, ISO 8601.

A library function that writes such a JSON is marked :func:`recorded`: calling it opens a
:class:`Session` (its start time), and :func:`current` gives that session to the code that
writes. Calls nested in another recorded call, or made by the command line, share its invocation.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import platform
import shlex
import socket
import subprocess
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

_INVOCATION: ContextVar[dict | None] = ContextVar("physdiff_invocation", default=None)
_SESSION: ContextVar[Session | None] = ContextVar("physdiff_session", default=None)
GIT_TIMEOUT_S = 10


def utc_now() -> str:
    """The time now, UTC, ISO 8601 with milliseconds (e.g. 2025-01-16T09:30:00.123+00:00)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _git(folder: Path, *args: str) -> str | None:
    """stdout of ``git args`` run in ``folder``, or None when git is missing or fails."""
    # the package's own repository, whatever repository the caller's environment points at
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` takes no lock another git process could meet
    try:
        done = subprocess.run(["git", *args], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(folder: str | Path) -> dict | None:
    """{"commit": sha, "dirty": bool} of the git checkout whose tracked files include
    ``folder``'s ``__init__.py``; None when there is none (an installed package, no git)."""
    folder = Path(folder)
    if not folder.is_dir() or _git(folder, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return None
    commit = _git(folder, "rev-parse", "HEAD")
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return None
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


@functools.lru_cache(maxsize=1)
def package_git_state() -> dict | None:
    """:func:`git_state` of physdiff's own source folder, looked up once per process: the code
    that runs is the code imported."""
    return git_state(Path(__file__).resolve().parent)


def _plain(value):
    """``value`` as JSON (a Path as its text), or ``_NOT_PLAIN`` for anything that is not a plain
    value or a list or dict of them (a config, a run, an array, a function)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _plain(value.item())
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v) for k, v in value.items()}
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items.values()) else items
    return _NOT_PLAIN


_NOT_PLAIN = object()


def version() -> str:
    """The installed distribution's version (importlib.metadata), else the package's ``__version__``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("physdiff")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def api_call(function: str, arguments: dict) -> dict:
    """{"call": {"function", "arguments" (the plain ones), "other_arguments" (names of the rest)}}."""
    plain = {k: _plain(v) for k, v in arguments.items()}
    call = {"function": function, "arguments": {k: v for k, v in plain.items() if v is not _NOT_PLAIN}}
    others = [k for k, v in plain.items() if v is _NOT_PLAIN]
    if others:
        call["other_arguments"] = others
    return {"call": call}


class Session:
    """One job's record: its invocation and start time, a device once known; :meth:`record`
    gives the whole record with the end time."""

    def __init__(self, invocation: dict | None = None):
        self.invocation = dict(invocation or {})
        self.started = utc_now()
        self.device = None

    def record(self, device=None) -> dict:
        """The provenance record of this job, ended now (``device``: the one it ran on, a
        torch.device or its name; default the one set on the session)."""
        import numpy as np
        import torch

        device = self.device if device is None else device
        out = {"physdiff_version": version()}
        git = package_git_state()
        if git is not None:
            out["git"] = dict(git)
        out["versions"] = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
        if device is not None:
            device = torch.device(device)
            out["device"] = str(device)
            if device.type == "cuda":
                out["cuda"] = {"version": torch.version.cuda, "gpu": torch.cuda.get_device_name(device)}
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world > 1:
            out["processes"] = world
        out |= self.invocation
        out |= {"host": socket.gethostname(), "started": self.started, "ended": utc_now()}
        return out


def current() -> Session:
    """The session of the recorded call under way (a new one, started now, outside any)."""
    session = _SESSION.get()
    return session if session is not None else Session(_INVOCATION.get())


@contextlib.contextmanager
def command_line(argv: list[str]):
    """Inside this block every record names the command ``physdiff argv...`` as what asked
    for it (``cli.main``)."""
    token = _INVOCATION.set({"command_line": shlex.join(["physdiff", *argv])})
    try:
        yield
    finally:
        _INVOCATION.reset(token)


def recorded(func):
    """Mark a library entry point whose results carry a provenance record: each call opens a
    :class:`Session` (:func:`current` inside it); the invocation is the command line, else the
    outermost recorded call with its plain arguments."""
    signature = inspect.signature(func)
    name = f"{func.__module__}.{func.__qualname__}"

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        invocation = _INVOCATION.get()
        token = None
        if invocation is None:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:  # the call itself is wrong: let the function say so
                return func(*args, **kwargs)
            bound.apply_defaults()
            invocation = api_call(name, dict(bound.arguments))
            token = _INVOCATION.set(invocation)
        session_token = _SESSION.set(Session(invocation))
        try:
            return func(*args, **kwargs)
        finally:
            _SESSION.reset(session_token)
            if token is not None:
                _INVOCATION.reset(token)

    return wrapper


__all__ = ["Session", "api_call", "command_line", "current", "git_state", "package_git_state", "recorded",
           "utc_now"]

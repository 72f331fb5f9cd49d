"""Progress of long jobs, one helper for all of them: a tqdm bar with its ETA on a terminal, one
plain line at a steady interval in a batch job's log (stderr not a terminal), or nothing.

A library function that can take long takes ``progress`` and opens its bar with
:func:`progress_bar`. What ``progress`` asks for:

- ``None`` (the library's default; what ``train`` has always done): a bar when stderr is a
  terminal, otherwise nothing — a script or a notebook stays quiet unless it asks;
- ``True`` (the command line's default): a bar on a terminal, otherwise one line on stderr every
  ``PHYSDIFF_PROGRESS_INTERVAL`` seconds (default 30; 0: a line at every update) and one when a
  job that took longer than that ends;
- ``False`` (``-q``): nothing;
- a :class:`Progress` already open: the caller's own bar, which the callee advances and leaves
  open (a file written in chunks, proposals counted by the exact sampler).

Only rank 0 of a torchrun job reports. Bars advance per batch, chunk or sweep, never inside a
sampler's step loop: a bar needs no host synchronisation.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from .errors import PhysdiffError

INTERVAL_ENV = "PHYSDIFF_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0  # seconds between two lines in a log


def interval() -> float:
    """Seconds between two progress lines in a log: $PHYSDIFF_PROGRESS_INTERVAL, else 30."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise PhysdiffError(f"{INTERVAL_ENV} = {text!r} must be a number of seconds >= 0 (0: a line at every "
                            "update); unset it for the default of 30")
    return value


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """The progress of one job of ``total`` units (sweeps, samples, steps) named ``desc``.
    ``mode``: "bar" (tqdm), "lines" (a plain line every ``every`` seconds) or "off"."""

    def __init__(self, total: int, desc: str, unit: str = "it", *, mode: str = "off", initial: int = 0,
                 every: float = DEFAULT_INTERVAL):
        self.total, self.desc, self.unit, self.mode = int(total), desc, unit, mode
        self.n = self.initial = int(initial)
        self.every = every
        self.postfix: dict[str, str] = {}
        self.start = self.last_line = time.monotonic()
        self.closed = False
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, file=sys.stderr,
                             dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` units."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self.last_line >= self.every:
                self.last_line = now
                self._line(now)

    def add_total(self, n: int) -> None:
        """``n`` more units to do than first planned (a burn-in known only after a pilot run)."""
        self.total += int(n)
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def set_postfix(self, **values) -> None:
        """Numbers shown after the count (e.g. the loss), ``{name: text}``."""
        self.postfix = {k: str(v) for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(self.postfix, refresh=False)

    @contextlib.contextmanager
    def external_write(self):
        """Print other lines to stderr inside this block without breaking a bar on a terminal."""
        if self._bar is None:
            yield
        else:
            with self._bar.external_write_mode(file=sys.stderr):
                yield

    def close(self, done: bool = True) -> None:
        """End the job; in a log, a last line when it took longer than the interval."""
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and done:
            now = time.monotonic()
            if now - self.start >= self.every:
                self._line(now, final=True)

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.start
        count = f"{self.n}/{self.total} {self.unit}s"
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        if final:
            text = f"{count} done in {_clock(elapsed)}{extra}"
        else:
            share = f" ({100 * self.n / self.total:.0f}%)" if self.total > 0 else ""
            rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
            eta = _clock(max(self.total - self.n, 0) / rate) if rate > 0 else "?"
            text = f"{count}{share}, {rate:.3g} {self.unit}s/s, elapsed {_clock(elapsed)}, ETA {eta}{extra}"
        print(f"physdiff: {self.desc}: {text}", file=sys.stderr, flush=True)


def _mode(progress) -> str:
    if progress is False or os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return "off"
    terminal = getattr(sys.stderr, "isatty", lambda: False)()
    if terminal:
        return "bar"
    return "lines" if progress is True else "off"


@contextlib.contextmanager
def progress_bar(progress, total: int, desc: str, unit: str = "it", *, initial: int = 0):
    """The :class:`Progress` of a job as ``progress`` asks (None, True, False or an open
    Progress; see the module's docstring), closed at the end of the block unless it is the
    caller's."""
    if isinstance(progress, Progress):
        yield progress
        return
    mode = _mode(progress)
    bar = Progress(total, desc, unit, mode=mode, initial=initial, every=interval() if mode == "lines" else 0.0)
    try:
        yield bar
    except BaseException:
        bar.close(done=False)
        raise
    bar.close()


__all__ = ["DEFAULT_INTERVAL", "INTERVAL_ENV", "Progress", "interval", "progress_bar"]

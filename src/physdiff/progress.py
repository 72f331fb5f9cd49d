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

Work inside one update (an ODE solve of a whole batch, the exact divergence's D backward passes,
a Metropolis chain) reports through :func:`pulse`: ``pulse(done, total, what)`` tells the
innermost bar opened by :func:`progress_bar` how far that work is, from counters only (no tensor
is read: no host synchronisation). In a log the bar then prints a line within its interval even
when no update comes for longer (``physdiff: DESC: 0/1000 samples (0%), ...; in progress: ODE
evaluation 17/48 (35%), its ETA 0:41``; an interval of 0 asks for a line at every update and none
at a pulse); on a terminal the bar shows it after the count. Nothing is printed where no bar is
open, or the bar is off.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time

from .errors import PhysdiffError

INTERVAL_ENV = "PHYSDIFF_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0  # seconds between two lines in a log
BAR_PULSE_SECONDS = 0.5  # a terminal bar redraws a pulse at most this often
_ACTIVE: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("physdiff_progress", default=None)


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
        self._inner: tuple | None = None  # (what, done, total, first done, its time) of the work in progress
        self._last_pulse = 0.0
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, file=sys.stderr,
                             dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` units."""
        self.n += n
        self._inner = None
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self.last_line >= self.every:
                self.last_line = now
                self._line(now)

    def pulse(self, done: float, total: float | None, what: str) -> None:
        """Work inside the current update: ``done`` of ``total`` (None: not known in advance, as
        an adaptive solver's evaluations) ``what`` (e.g. "ODE evaluation"). In a log, a line when
        the interval has passed since the last one; on a terminal, the bar's postfix."""
        now = time.monotonic()
        if self._inner is None or self._inner[0] != what or done < self._inner[1]:
            self._inner = (what, done, total, done, now)  # a new piece of work starts its own clock
        else:
            self._inner = (what, done, total, *self._inner[3:])
        if self._bar is not None:
            if now - self._last_pulse >= BAR_PULSE_SECONDS:
                self._last_pulse = now
                self._bar.set_postfix({**self.postfix, "now": self._inner_text(now, eta=False)}, refresh=True)
        elif self.mode == "lines" and self.every > 0 and now - self.last_line >= self.every:
            self.last_line = now  # (an interval of 0 asks for a line at every update, not at every pulse)
            self._line(now)

    def _inner_text(self, now: float, eta: bool = True) -> str:
        what, done, total, first, since = self._inner
        count = f"{done:.0f}" if float(done).is_integer() else f"{done:.1f}"
        if not total:
            return f"{what} {count}"
        text = f"{what} {count}/{total:.0f} ({100 * done / total:.0f}%)"
        if eta and done > first and now > since:
            text += f", its ETA {_clock((now - since) * (total - done) / (done - first))}"
        return text

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
            if self._inner is not None:
                text += f"; in progress: {self._inner_text(now)}"
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
        token = _ACTIVE.set(progress)  # the caller's bar gets the pulses of the work inside
        try:
            yield progress
        finally:
            _ACTIVE.reset(token)
        return
    mode = _mode(progress)
    bar = Progress(total, desc, unit, mode=mode, initial=initial, every=interval() if mode == "lines" else 0.0)
    token = _ACTIVE.set(bar)
    try:
        yield bar
    except BaseException:
        bar.close(done=False)
        raise
    finally:
        _ACTIVE.reset(token)
    bar.close()


def pulse(done: float, total: float | None, what: str) -> None:
    """Report work inside one update of the innermost open bar (module docstring): ``done`` of
    ``total`` (None: unknown) ``what``. Cheap where no bar is open or it is off: call it per ODE
    evaluation or per chunk of a loop, never with a number read from a device tensor."""
    bar = _ACTIVE.get()
    if bar is not None and bar.mode != "off" and not bar.closed:
        bar.pulse(done, total, what)


__all__ = ["DEFAULT_INTERVAL", "INTERVAL_ENV", "Progress", "interval", "progress_bar", "pulse"]

"""One model for a range of couplings: the coupling a lattice run is conditioned on.

A run whose [theory] table gives one parameter as a range, ``kappa = [0.26, 0.28]`` (the command
line: ``physdiff train --dataset phi4 --kappa 0.26:0.28``), is trained on Monte Carlo sets at
``data.couplings`` evenly spaced values of that parameter, each configuration labelled with its
coupling, and its network takes the coupling as an input (``nets/local.py``; the Gaussian part's
power spectrum is interpolated between the grid's, ``nets/gaussian.py``). Sampling it at a coupling
c in the range (``LoadedRun.at``) gives proposals whose exact log q is that of the flow at c; the
independence Metropolis chain then accepts them with the action at c, so it is exact at every c of
the range, on the grid or between its points, whatever the model learnt. A coupling outside the
range is refused: the network was never shown it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import PhysdiffError


@dataclass(frozen=True)
class Conditioning:
    """The coupling ``name`` a run is conditioned on, trained over [lo, hi] on ``points``
    evenly spaced values."""

    name: str
    lo: float
    hi: float
    points: int

    @property
    def grid(self) -> np.ndarray:
        """The couplings of the training sets, lo..hi inclusive."""
        return np.linspace(self.lo, self.hi, self.points)

    @property
    def centre(self) -> float:
        return 0.5 * (self.lo + self.hi)

    def contains(self, value: float) -> bool:
        # a value printed from the grid and read back may differ from lo or hi by a rounding
        tol = 1e-12 * max(1.0, abs(self.lo), abs(self.hi))
        return self.lo - tol <= value <= self.hi + tol

    def check(self, value, where: str | None = None) -> float:
        """``value`` as a float in the trained range, or a one-line error naming the range."""
        where = where or self.name
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise PhysdiffError(f"{where} must be a number in [{self.lo:g}, {self.hi:g}], got {value!r}") from None
        if not math.isfinite(value) or not self.contains(value):
            raise PhysdiffError(f"{where} = {value:g} is outside the range this run was trained on: {self.name} in "
                                f"[{self.lo:g}, {self.hi:g}]")
        return self.nearest(value)  # a rounding beyond an end: the end itself

    def nearest(self, value: float) -> float:
        """The coupling of the range closest to ``value`` (``value`` itself inside it)."""
        return min(max(float(value), self.lo), self.hi)

    def as_dict(self) -> dict:
        return {"name": self.name, "range": [self.lo, self.hi], "points": self.points}


def conditioning_of(cfg) -> Conditioning | None:
    """The coupling a lattice config conditions on (its [theory] parameter given as [lo, hi]),
    or None."""
    table = getattr(cfg, "theory", None) or {}
    for name, value in table.items():
        if name != "L" and isinstance(value, list | tuple):
            return Conditioning(name, float(value[0]), float(value[1]), int(cfg.data.couplings))
    return None


def config_at(cfg, value: float):
    """``cfg`` with its conditioned coupling set to ``value`` (a scalar [theory] table: the
    theory, the embedding and the read-out of that coupling)."""
    cond = conditioning_of(cfg)
    if cond is None:
        raise PhysdiffError("this run is not conditioned on a coupling")
    return replace(cfg, theory={**cfg.theory, cond.name: float(value)})

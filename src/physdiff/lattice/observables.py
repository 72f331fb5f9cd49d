"""Observables of an ensemble of L×L configurations, each with its Γ-method error and τ_int.

With M = (1/V) Σ_x φ_x per configuration (V = L²):
- ⟨M⟩, ⟨|M|⟩; χ₂ = V⟨M²⟩ (the full susceptibility, = G̃(p = 0)); the connected
  χ_c = V(⟨M²⟩ − ⟨|M|⟩²); the Binder cumulant U_L = 1 − ⟨M⁴⟩/(3⟨M²⟩²);
- the theory's density ⟨s⟩ (``Theory.density``: S/V by default, the energy density E/V for Ising);
- the connected two-point function G(r) = (1/V)Σ_x ⟨φ_x φ_{x+r}⟩ − ⟨M⟩², r along either axis;
- the second-moment correlation length ξ₂ = √((χ₂/F − 1) / (4 sin²(π/L))), F = G̃(p_min),
  p_min = (2π/L, 0) (Cooper, Freedman & Preston 1982; Caracciolo et al. 1993).

An ensemble of C chains is chain-major ((C·n, L, L), chain c in rows c·n..(c+1)·n−1); its
chains are Γ-method replicas.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import PhysdiffError
from ..stats import Estimate, derived, gamma_method

SCALARS = ("m", "abs_m", "chi2", "chi_connected", "binder", "action_density", "xi2")


def primaries(x: np.ndarray, theory) -> dict[str, np.ndarray]:
    """Per-configuration measurements: (N,) each, and "g" (N, L//2 + 1) for G(r) before the
    subtraction of ⟨M⟩², "f" (N,) = |φ̃(p_min)|²/V; "s" is the theory's ``density``."""
    if x.ndim != 3:
        raise PhysdiffError(f"observables are defined for one real component per site, (N, L, L); got configurations "
                            f"of shape {x.shape[1:]} (theory {theory.name!r})")
    N, L, _ = x.shape
    V = L * L
    m = x.reshape(N, -1).mean(1)
    g = np.stack([0.5 * ((x * np.roll(x, -r, -1)).mean((1, 2)) + (x * np.roll(x, -r, -2)).mean((1, 2)))
                  for r in range(L // 2 + 1)], axis=1)
    phase = np.exp(2j * np.pi * np.arange(L) / L)
    f = 0.5 * (np.abs((x * phase[None, None, :]).sum((1, 2))) ** 2
               + np.abs((x * phase[None, :, None]).sum((1, 2))) ** 2) / V
    s = theory.density(torch.from_numpy(x)).numpy()
    return {"m": m, "abs_m": np.abs(m), "m2": m**2, "m4": m**4, "s": s, "g": g, "f": f}


def _chains(a: np.ndarray, chains: int) -> np.ndarray:
    return a.reshape(chains, -1, *a.shape[1:])


def measure(x: np.ndarray, theory, chains: int = 1,
            where: str = "the ensemble") -> dict[str, Estimate | list[Estimate]]:
    """Every observable of the module docstring as an Estimate (G: a list over r = 0..L/2).

    Every value and error is finite, or a PhysdiffError names the observable of ``where`` and
    why it has none: the theory's density not finite on some configurations, ⟨M²⟩ = 0 (every
    configuration has M = 0: no Binder cumulant, no ξ₂), ⟨F⟩ = 0 (no fluctuation at the
    smallest momentum: ξ₂ infinite)."""
    N, L, _ = x.shape
    if N % chains:
        chains = 1
    V = L * L
    prim = primaries(x, theory)
    bad = ~np.isfinite(prim["s"])
    if bad.any():
        raise PhysdiffError(f"observables of {where}: the density of theory {theory.name!r} ({theory.label}) is not "
                            f"finite on {int(bad.sum())} of the {N} configurations")
    p = {k: _chains(v, chains) for k, v in prim.items()}
    sin2 = 4 * math.sin(math.pi / L) ** 2

    def xi(a):  # a = (⟨M²⟩, ⟨F⟩); ⟨F⟩ = 0: ξ₂ infinite, ⟨M²⟩ = ⟨F⟩ = 0: none (both refused below)
        if a[1] == 0:
            return math.inf if a[0] > 0 else math.nan
        ratio = V * a[0] / a[1] - 1
        return math.sqrt(ratio / sin2) if ratio > 0 else 0.0

    def binder(a):  # a = (⟨M²⟩, ⟨M⁴⟩)
        return 1 - a[1] / (3 * a[0] ** 2) if a[0] > 0 else math.nan

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # refused below, in words
        out = {"m": gamma_method(p["m"]), "abs_m": gamma_method(p["abs_m"]),
               "chi2": gamma_method(V * p["m2"]),
               "chi_connected": derived(lambda a: V * (a[0] - a[1] ** 2), [p["m2"], p["abs_m"]]),
               "binder": derived(binder, [p["m2"], p["m4"]]),
               "action_density": gamma_method(p["s"]),
               "xi2": derived(xi, [p["m2"], p["f"]])}
        out["G"] = [derived(lambda a: a[0] - a[1] ** 2, [p["g"][..., r], p["m"]]) for r in range(L // 2 + 1)]
    m2, f = float(prim["m2"].mean()), float(prim["f"].mean())
    why = {"binder": "⟨M²⟩ = 0: every configuration has M = 0",
           "xi2": "⟨M²⟩ = 0: every configuration has M = 0" if not m2 > 0 else
           "⟨F⟩ = ⟨|φ̃(p_min)|²⟩/V = 0: no configuration fluctuates at the smallest momentum, ξ₂ is infinite"
           if not f > 0 else "its value is not finite"}
    for name, est in [*((k, v) for k, v in out.items() if k != "G"), *((f"G({r})", g) for r, g in enumerate(out["G"]))]:
        if not (math.isfinite(est.value) and math.isfinite(est.error) and math.isfinite(est.tau_int)):
            reason = why.get(name, "its value or error is not finite")
            raise PhysdiffError(f"observables of {where}: {name} = {est.value} ± {est.error} has no finite value "
                                f"({reason}); physdiff reports no number that is not finite")
    return out


def as_table(obs: dict) -> dict:
    """JSON-ready: {name: {value, error, tau_int, ...}}, G as a list."""
    out = {k: v.as_dict() for k, v in obs.items() if k != "G"}
    out["G"] = [g.as_dict() for g in obs["G"]]
    return out


def compare(a: dict, b: dict) -> dict[str, float | None]:
    """z = (a − b)/√(δa² + δb²) for every scalar observable of two tables of :func:`as_table`;
    None where the combined error is 0 (e.g. two frozen Ising ensembles, all +1 against all −1):
    such values are not comparable — neither "agree" (z = 0) nor infinitely apart. None, not
    NaN, so that the table stays valid JSON (null)."""
    z = {}
    for k in SCALARS:
        err = math.hypot(a[k]["error"], b[k]["error"])
        z[k] = (a[k]["value"] - b[k]["value"]) / err if err > 0 else None
    return z


def format_z(z: float | None, spec: str) -> str:
    """A z-score for a table: ``format(z, spec)``, or "n/a" (not comparable) right-aligned to the
    width of ``spec``."""
    if z is None:
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return "n/a".rjust(int(width or 0))
    return format(z, spec)

"""Errors of correlated Monte Carlo series: the Γ-method with automatic windowing (Wolff 2004,
"Monte Carlo errors with less errors", Comput. Phys. Commun. 156, 143), for primary observables
and for functions of their means, with replicas; the Kish effective sample size with a
bootstrap error.

Shapes: a series is (R, N) — R replicas (independent chains) of N consecutive measurements —
or (N,) for one chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

S_DEFAULT = 1.5  # Wolff's S: the ratio τ/τ_int assumed for the slowest mode when choosing W


@dataclass(frozen=True)
class Estimate:
    """value ± error, with the integrated autocorrelation time τ_int (in measurements) and its
    error, and the window W the automatic windowing chose."""

    value: float
    error: float
    tau_int: float
    tau_int_error: float
    window: int

    def as_dict(self) -> dict:
        return {"value": self.value, "error": self.error, "tau_int": self.tau_int,
                "tau_int_error": self.tau_int_error, "window": self.window}


def _replicas(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[None] if a.ndim == 1 else a


def autocorrelation(a: np.ndarray, max_lag: int) -> np.ndarray:
    """Γ(t), t = 0..max_lag, of the fluctuations of a (R, N) about the overall mean, summed over
    replicas and divided by the number of pairs (Wolff 2004, eq. 31), by FFT."""
    gamma, scale = _scaled_autocorrelation(a, max_lag)
    return gamma * scale * scale


def _scaled_autocorrelation(a: np.ndarray, max_lag: int) -> tuple[np.ndarray, float]:
    """(Γ(t) / s², s) with s = max |a − ā|: fluctuations near 1e200 (or 1e-200) would overflow (or
    underflow) when squared; in units of s they cannot. s = 0 for constant data."""
    a = _replicas(a)
    R, N = a.shape
    d = a - a.mean()
    scale = float(np.max(np.abs(d))) if d.size else 0.0
    if scale == 0.0 or not np.isfinite(scale):
        return np.zeros(max_lag + 1), scale
    d = d / scale
    size = 1 << int(np.ceil(np.log2(2 * N)))
    f = np.fft.rfft(d, size, axis=1)
    acf = np.fft.irfft(f * np.conj(f), size, axis=1)[:, : max_lag + 1].sum(0)
    return acf / (R * (N - np.arange(max_lag + 1))), scale


def gamma_method(a, S: float = S_DEFAULT) -> Estimate:
    """Mean of a series with its error from the autocorrelation function, the window W chosen
    automatically (Wolff 2004, sec. 3.3): W is the first lag where
    g(W) = exp(−W/τ_W) − τ_W/√(W N) < 0, τ_W = S / ln((2τ_int(W)+1)/(2τ_int(W)−1)), with
    S = 1.5 by default (Wolff's choice; pyerrors' default is S = 2, give ``S=2.0`` for its
    window). Then σ² = 2 τ_int Γ(0) / N_tot with Γ bias-corrected (eq. 49) and
    δτ_int ≈ τ_int √(2(2W+1)/N) (eq. 42).

    The error is never below the naive error of independent data, √(Γ(0)/N_tot) (times the
    eq. 49 factor): τ_int is floored at ½ (times that factor). Why: a summed autocorrelation
    2τ_int = 1 + 2 Σ_{t≤W} Γ(t)/Γ(0) below 1 is far more often noise of the estimated Γ than real
    anticorrelation (independent Gaussian data at N = 8: below 1 in 73% of cases, ≤ 0 in 15%),
    and without the floor a sum ≤ 0 gave an error of exactly 0, with which any two results
    "agree". The price: a series that really is anticorrelated (an AR(1) with ρ < 0,
    over-relaxation) gets the naive error, larger than its true one (ρ = −0.6: the naive
    error instead of half of it) — conservative, never too small. pyerrors applies the same
    floor (its τ_int(W) is clipped at ½ before the window is chosen).

    τ_int is reported bias-corrected, with the eq. 49 factor (1 + (2W+1)/N_tot), as Wolff's
    UWerr does: τ_int = C_F / 2Γ(0) and σ² = C_F / N_tot = 2 τ_int Γ(0) / N_tot. pyerrors'
    ``e_tauint`` is the same up to its own 1/(1 + 1/N_tot).

    Replicas (rows of an (R, N) array) are independent chains of one ensemble: Γ(t) sums the
    products of fluctuations about the overall mean over replicas (Wolff 2004, eq. 31), so
    replicas whose means disagree enlarge the error. pyerrors (``Obs`` with replicas
    ``"ens|r0"``, ...) takes each replica's fluctuations about its own mean instead; for one
    replica, or replicas with equal means, the two coincide (tested against pyerrors 2.17 in
    tests/test_stats.py, with the same S)."""
    a = _replicas(a)
    R, N = a.shape
    n_tot = R * N
    mean = float(a.mean())
    if N < 2:
        raise ValueError("the Γ-method needs at least 2 measurements per replica")
    if not np.isfinite(a).all():  # no error can be given: NaN, which strict JSON writes as null
        return Estimate(mean, math.nan, math.nan, math.nan, 0)
    gamma, scale = _scaled_autocorrelation(a, N - 1)  # Γ in units of scale², so that σ never overflows
    if gamma[0] <= 0:  # a constant series: no fluctuation at all
        return Estimate(mean, 0.0, 0.5, 0.0, 0)
    window = N - 1
    tau = 0.5
    for w in range(1, N):
        tau = 0.5 + gamma[1: w + 1].sum() / gamma[0]
        tau_w = S / math.log((2 * tau + 1) / (2 * tau - 1)) if tau > 0.5 else 1e-12
        if math.exp(-w / tau_w) - tau_w / math.sqrt(w * n_tot) < 0:
            window = w
            break
    bias = 1 + (2 * window + 1) / n_tot  # bias of Γ from the estimated mean (eq. 49)
    c = (gamma[0] + 2 * gamma[1: window + 1].sum()) * bias
    c = max(c, gamma[0] * bias)  # never below independent data (see the docstring)
    tau_int = c / (2 * gamma[0])  # Wolff's τ_int = C_F / 2Γ(0), C_F bias-corrected
    error = math.sqrt(c / n_tot) * scale
    return Estimate(mean, error, float(tau_int), float(tau_int) * math.sqrt(2 * (2 * window + 1) / n_tot), window)


def derived(f: Callable[[np.ndarray], float], series: list, S: float = S_DEFAULT) -> Estimate:
    """f(⟨A_1⟩, ..., ⟨A_k⟩) with its error (Wolff 2004, sec. 2.2): the Γ-method on the projected
    fluctuations Σ_α ∂f/∂A_α (a_α − Ā_α), the gradient by central differences of step
    σ_α/√N. ``series``: k arrays of one shape (R, N) or (N,). The error has the floor and
    replica convention of :func:`gamma_method` (pyerrors' ``derived_observable`` takes the
    gradient by automatic differentiation; the difference is O(h²), h = σ/√N)."""
    arr = np.stack([_replicas(s) for s in series])  # (k, R, N)
    means = arr.reshape(len(series), -1).mean(1)
    n = arr[0].size
    grad = np.zeros(len(series))
    for i in range(len(series)):
        h = arr[i].std() / math.sqrt(n) or 1e-8 * max(abs(means[i]), 1.0)
        up, down = means.copy(), means.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (f(up) - f(down)) / (2 * h)
    projected = np.tensordot(grad, arr - means[:, None, None], axes=1) + f(means)
    est = gamma_method(projected, S)
    return Estimate(float(f(means)), est.error, est.tau_int, est.tau_int_error, est.window)


def first_non_finite(value, path: str = "") -> tuple[str, float] | None:
    """(where, value) of the first number in a nested report (dicts, lists, tuples, numbers,
    NumPy scalars and arrays) that is NaN or infinite, ``where`` as ``key.key[i]``; None when every
    number is finite. None (JSON null: "not comparable") and strings are not numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = first_non_finite(v, f"{path}.{k}" if path else str(k))
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = first_non_finite(v, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            i = int(np.flatnonzero(~np.isfinite(value.ravel()))[0])
            return f"{path}[{i}]", float(value.ravel()[i].real)
        return None
    if isinstance(value, (int, np.integer)):
        return None
    if isinstance(value, (float, np.floating)):
        return None if math.isfinite(value) else (path or "value", float(value))
    return None


def kish_ess(log_w: np.ndarray, n_boot: int = 200, seed: int = 0) -> tuple[float, float]:
    """Kish's effective sample size per sample, (Σw)² / (N Σw²), of importance weights given by
    their logarithms, with its bootstrap standard error."""
    log_w = np.asarray(log_w, dtype=np.float64)

    def ess(lw):
        w = np.exp(lw - lw.max())
        return float(w.sum() ** 2 / (len(w) * (w**2).sum()))

    rng = np.random.default_rng(seed)
    boots = [ess(log_w[rng.integers(0, len(log_w), len(log_w))]) for _ in range(n_boot)]
    return ess(log_w), float(np.std(boots, ddof=1))


def ratio_bootstrap(values, floors, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """value/floor = mean_r v_r / (mean_r f_r²)^½ of a distance over R reference pairs (v_r: the
    model's distance to reference r, f_r: that of the floor's true set to it; ``metrics.compare``),
    with its bootstrap error: the standard deviation of the same ratio over ``n_boot`` resamplings
    of the R pairs with replacement, a pair's v and f drawn together (Efron & Tibshirani 1993,
    ch. 6). ``values``: (R,), or one number shared by every pair (only the floor's spread then
    enters). The error is NaN for R < 2 (one pair shows no spread), and as large as the spread
    of the pairs can show: noise common to every pair (one reference set, one sample set shared
    by all) is not in it."""
    floors = np.asarray(floors, dtype=np.float64)
    values = np.broadcast_to(np.asarray(values, dtype=np.float64), floors.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(values.mean() / np.sqrt(np.mean(floors**2)))
        if len(floors) < 2:
            return ratio, math.nan
        pick = np.random.default_rng(seed).integers(0, len(floors), (n_boot, len(floors)))
        boots = values[pick].mean(1) / np.sqrt((floors[pick] ** 2).mean(1))
    boots = boots[np.isfinite(boots)]
    return ratio, float(boots.std(ddof=1)) if len(boots) > 1 else math.nan

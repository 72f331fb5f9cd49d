"""Continuous embeddings of discrete lattice laws: a continuous variable x with a known density
e^{−S_x}/Z_x, from which the discrete field is drawn exactly, so that a diffusion model of x
(which has an exact density) is made exact by Metropolis against e^{−S_x} and mapped back exactly.

The contract of an embedding (a theory names its own with ``Theory.embedding``):

- ``action(x) -> (B,)``: S_x of the continuous variable (torch);
- ``lift(s, rng)``: an exact draw of x given the discrete field (training data);
- ``project(x)``: an exact draw of the discrete field given x (samples, chains);
- ``log_z_offset()``: log Z of the theory − log Z_x, a number known in closed form.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..errors import PhysdiffError


def _wavenumbers(L: int) -> torch.Tensor:
    """cos p₁ + cos p₂ on the L×L torus, (L, L) float64, p_μ = 2πn/L."""
    c = torch.cos(2 * torch.pi * torch.arange(L, dtype=torch.float64) / L)
    return c[:, None] + c[None, :]


def configuration_uniforms(x: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1) of x's shape, one set per configuration, a function of the
    configuration's own bytes (BLAKE2b → a seed): sample i's read-out then depends only on x_i,
    which depends only on (seed, i), whatever the batch — and draws for different x are
    independent for every purpose of a Monte Carlo estimate."""
    out = np.empty(x.shape, dtype=np.float64)
    for i, xi in enumerate(np.ascontiguousarray(x)):
        key = int.from_bytes(hashlib.blake2b(xi.tobytes(), digest_size=8).digest(), "little")
        out[i] = np.random.default_rng(key).random(xi.shape)
    return out


@dataclass(frozen=True)
class HubbardStratonovich:
    """The Gaussian-integral (Hubbard–Stratonovich) relaxation of the Ising model (Zhang, Sutton,
    Storkey & Ghahramani, NIPS 2012, "Continuous relaxations for discrete Hamiltonian Monte
    Carlo"). With J = Σ_μ (T_μ + T_μ⁻¹) the torus adjacency (so Σ_⟨xy⟩ s_x s_y = ½ sᵀJs, and the
    eigenvalues 2(cos p₁ + cos p₂) of J lie in [−4, 4]) and W = βJ + cI, c = 4β + ``shift``
    (positive definite for shift > 0):

        p(x, s) ∝ exp(−½ xᵀW⁻¹x + s·x)   ⇒   x | s ~ N(W s, W),   s_i | x ~ ±1 with P(+1) = σ(2x_i),
        p(x) ∝ exp(−S_x),  S_x = ½ xᵀW⁻¹x − Σ_i log 2cosh x_i,
        Z_x = ∫ dx e^{−S_x} = (2π)^{V/2} det(W)^{1/2} e^{cV/2} Z_Ising,

    since Σ_s ∫dx e^{−½xᵀW⁻¹x + s·x} = Σ_s (2π)^{V/2} det(W)^{1/2} e^{½ sᵀWs} and ½ sᵀWs =
    β Σ_⟨xy⟩ s_x s_y + cV/2 for spins ±1. W is circulant on the torus: W⁻¹ and W^{1/2} are FFTs,
    det W = Π_p (c + 2β(cos p₁ + cos p₂))."""

    beta: float
    L: int
    shift: float = 1.0
    name: ClassVar[str] = "hubbard-stratonovich"
    MAX_CONDITION: ClassVar[float] = 1e8  # of W: beyond it W⁻¹x and log det W lose their digits

    def __post_init__(self):
        # W's eigenvalues lie in [c − 4β, c + 4β] = [shift, 8β + shift] (computed, not assumed: a
        # shift below the float resolution of 4β leaves W singular in floating point)
        w = self.eigenvalues()
        lo, hi = float(w.min()), float(w.max())
        if not (math.isfinite(lo) and lo > 0 and hi / lo <= self.MAX_CONDITION):
            raise PhysdiffError(f"data.embedding_shift = {self.shift:g} is numerically degenerate at β = "
                                f"{self.beta:g}: W = βJ + (4β + shift) I has condition number "
                                f"{hi / lo if lo > 0 else math.inf:.3g} (at most {self.MAX_CONDITION:g} is allowed); "
                                f"give a shift >= {8 * self.beta / (self.MAX_CONDITION - 1):.3g}")

    @property
    def c(self) -> float:
        return 4.0 * self.beta + self.shift

    def eigenvalues(self) -> torch.Tensor:
        """The eigenvalues of W, (L, L) float64, on the FFT's wave numbers."""
        return self.c + 2.0 * self.beta * _wavenumbers(self.L)

    def action(self, x: torch.Tensor) -> torch.Tensor:
        """S_x = ½ xᵀW⁻¹x − Σ log 2cosh x (B, L, L) → (B,), in x's dtype."""
        w = self.eigenvalues().to(x.device)
        xk = torch.fft.fft2(x.double())
        quad = (xk.abs() ** 2 / w).sum(dim=(-2, -1)) / (self.L * self.L)  # Parseval: xᵀW⁻¹x
        ax = x.double().abs()
        log2cosh = ax + torch.log1p(torch.exp(-2 * ax))  # log(2 cosh x), stable for large |x|
        return (0.5 * quad - log2cosh.sum(dim=(-2, -1))).to(x.dtype)

    def lift(self, s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """An exact draw of x | s ~ N(W s, W) for each configuration of spins (N, L, L)."""
        w = self.eigenvalues().numpy()
        s = np.asarray(s, dtype=np.float64)
        xi = rng.standard_normal(s.shape)
        mean = np.fft.ifft2(np.fft.fft2(s) * w).real
        noise = np.fft.ifft2(np.fft.fft2(xi) * np.sqrt(w)).real  # W^{1/2} ξ: real, W symmetric
        return mean + noise

    def project(self, x: np.ndarray, uniforms: np.ndarray | None = None) -> np.ndarray:
        """An exact draw of the spins s | x: s_i = +1 with probability σ(2x_i) = e^{x_i}/(2cosh x_i),
        independently per site, from ``uniforms`` (x's shape, in [0, 1)) or, by default,
        :func:`configuration_uniforms` of x (the same x, the same spins)."""
        x = np.asarray(x)
        u = configuration_uniforms(x) if uniforms is None else uniforms
        p_up = 0.5 * (1.0 + np.tanh(np.asarray(x, dtype=np.float64)))  # σ(2x)
        return np.where(u < p_up, 1.0, -1.0).astype(x.dtype if x.dtype.kind == "f" else np.float64)

    def log_z_offset(self) -> float:
        """log Z_Ising − log Z_x = −(V/2) log 2π − ½ log det W − cV/2."""
        V = self.L * self.L
        return float(-0.5 * V * math.log(2 * math.pi) - 0.5 * torch.log(self.eigenvalues()).sum() - 0.5 * self.c * V)


EMBEDDINGS = {"hubbard-stratonovich": HubbardStratonovich}
EMBEDDING_NAMES = ("auto", "none", *EMBEDDINGS)

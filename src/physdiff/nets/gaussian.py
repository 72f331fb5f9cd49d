"""The exact denoiser of a translation-invariant Gaussian field, added to a network's output.

On a periodic L×L lattice a zero-mean field whose law is invariant under translations has a
covariance that the discrete Fourier transform diagonalises: C = F⁻¹ diag(P) F with the power
spectrum P_k = E|φ̃_k|² / V (φ̃ = unnormalised FFT, V = L²). If the field were Gaussian, then for
x_t = α x₀ + σ ε (α² = ᾱ_t, σ² = 1 − ᾱ_t) every optimal prediction would be linear and diagonal
in momentum space (Wiener filter):

    E[ε  | x_t]_k = σ / (α² P_k + σ²) x̃_k
    E[x₀ | x_t]_k = α P_k / (α² P_k + σ²) x̃_k
    E[v  | x_t]_k = α σ (1 − P_k) / (α² P_k + σ²) x̃_k      (v = α ε − σ x₀, Salimans & Ho 2022)

:class:`SpectralGaussian` measures P from the (normalised) training set once, stores it with the
weights, and returns this linear prediction plus the wrapped network's output: the network only
learns the departure from the Gaussian (for φ⁴ the interaction and the double well of the zero
mode). With a network whose output layer starts at zero, the untrained model is already the
Gaussian field with the data's two-point function. The linear part is odd in x and commutes with
translations and the lattice rotations and reflections, so every symmetry of the wrapped network
is kept.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..denoiser import PREDICTIONS, v_from
from ..errors import PhysdiffError
from ..schedule import log_sigma_bar_at


def lattice_power_spectrum(x0: torch.Tensor) -> torch.Tensor:
    """P_k = mean over samples and channels of |FFT(x)_k|² / V for fields (N, ..., H, W), averaged
    over the lattice's point group (k ↔ −k, and the axis swap when H = W). Shape (H, W), float64."""
    x = x0.double().reshape(-1, *x0.shape[-2:])
    h, w = x.shape[-2:]
    p = (torch.fft.fft2(x).abs() ** 2).mean(0) / (h * w)
    for dim in (-1, -2):  # reflection k → −k along each axis: index i → (−i) mod n
        p = 0.5 * (p + torch.roll(torch.flip(p, [dim]), 1, dim))
    if h == w:
        p = 0.5 * (p + p.T)
    return p


class SpectralGaussian(nn.Module):
    """out(x, t) = (Wiener filter of P at t)(x) + inner(x, t): see the module docstring.

    ``log_sigma_bar``: the schedule's u_i = log √((1−ᾱ_i)/ᾱ_i), i = 0..T−1 (a fractional index t is
    read by linear interpolation of u, as the probability-flow ODE does); ``prediction``: what
    the model predicts (eps, x0, v). Buffers ``power`` (H, W) and ``log_sigma_bar`` are saved
    with the weights; :meth:`fit` sets ``power`` from the normalised training data."""

    def __init__(self, inner: nn.Module, shape: tuple[int, ...], log_sigma_bar: np.ndarray, prediction: str,
                 grid=None):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise PhysdiffError(f"unknown prediction {prediction!r}; allowed: {', '.join(PREDICTIONS)}")
        if len(shape) < 2:
            raise PhysdiffError(f"a spectral Gaussian needs fields (..., H, W), got shape {tuple(shape)}")
        self.inner, self.prediction, self.shape = inner, prediction, tuple(shape)
        if grid is None:
            self.register_buffer("power", torch.ones(shape[-2:]))
            self.register_buffer("grid", None)
        else:  # a coupling-conditioned run: one spectrum per training coupling, interpolated between them
            grid = torch.as_tensor(np.asarray(grid), dtype=torch.float64)
            if grid.dim() != 1 or len(grid) < 2 or not bool((grid.diff() > 0).all()):
                raise PhysdiffError("the couplings of a conditioned Gaussian part must increase, at least two")
            # moves with the module (no copy per evaluation); not saved: the run's config gives it
            self.register_buffer("grid", grid, persistent=False)
            self.register_buffer("power", torch.ones((len(grid), *shape[-2:])))
        # float64: ᾱ near 1 and σ² = 1 − ᾱ near 0 are read from it (a few hundred bytes)
        self.register_buffer("log_sigma_bar", torch.as_tensor(np.asarray(log_sigma_bar), dtype=torch.float64))

    @torch.no_grad()
    def fit(self, x0: torch.Tensor, cond: torch.Tensor | None = None) -> None:
        """Set the power spectrum from training fields (N, *shape) in network units; a
        conditioned part (``grid``) measures one per coupling, from the fields whose ``cond``
        (N,) is that grid value."""
        if tuple(x0.shape[1:]) != self.shape:
            raise PhysdiffError(f"fields of shape {tuple(x0.shape[1:])} for a model of shape {self.shape}")
        if self.grid is None:
            self.power.copy_(lattice_power_spectrum(x0).to(self.power))
            return
        if cond is None:
            raise PhysdiffError("a coupling-conditioned Gaussian part is fitted with the couplings of its fields")
        cond, grid = cond.to(torch.float64).reshape(-1).cpu(), self.grid.double().cpu()
        nearest = (cond[:, None] - grid[None, :]).abs().argmin(dim=1)  # each field's grid coupling
        spacing = float(grid.diff().min())
        if float((cond - grid[nearest]).abs().max()) > 1e-3 * spacing:
            raise PhysdiffError("training fields at couplings off the Gaussian part's grid")
        for k, c in enumerate(grid):
            rows = torch.nonzero(nearest == k).reshape(-1)
            if len(rows) == 0:
                raise PhysdiffError(f"no training fields at coupling {float(c):g} of the Gaussian part's grid")
            self.power[k].copy_(lattice_power_spectrum(x0[rows.to(x0.device)]).to(self.power))

    def spectrum(self, cond: torch.Tensor | None, batch: int, dtype) -> torch.Tensor:
        """P (H, W), or for a conditioned part P at each coupling of ``cond`` (B, H, W): linear
        in the coupling between the grid's (held at the nearest end outside it)."""
        if self.grid is None:
            return self.power.to(dtype)
        if cond is None:
            raise PhysdiffError(f"this Gaussian part is conditioned on a coupling in [{float(self.grid[0]):g}, "
                                f"{float(self.grid[-1]):g}]: give it as cond")
        grid = self.grid
        c = cond.to(grid.dtype).reshape(-1).expand(batch).clamp(grid[0], grid[-1])  # tensor bounds: no host sync
        k = torch.searchsorted(grid, c, right=True).clamp(1, len(grid) - 1)
        w = ((c - grid[k - 1]) / (grid[k] - grid[k - 1]))[:, None, None]
        p = self.power.to(torch.float64)
        return ((1 - w) * p[k - 1] + w * p[k]).to(dtype)

    def gain(self, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The Wiener filter's gain per momentum, (B, H, W) float64, at fractional indices t (B,).
        ᾱ(t) = sigmoid(−2u(t)) with u read by ``schedule.log_sigma_bar_at`` (as the ODE reads it),
        in torch on the model's device; v from E[ε] and E[x₀] by ``denoiser.v_from``. ``cond``:
        the couplings (B,) of a conditioned part."""
        u = log_sigma_bar_at(self.log_sigma_bar, t)
        ab = torch.sigmoid(-2.0 * u)[:, None, None]  # ᾱ = 1 / (1 + σ̄²)
        a2, s2 = ab, 1.0 - ab
        p = self.spectrum(cond, len(ab), ab.dtype)
        denom = a2 * p + s2
        eps, x0 = s2.sqrt() / denom, a2.sqrt() * p / denom  # E[ε|x_t]_k, E[x₀|x_t]_k per unit x̃_k
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        return v_from(x0, eps, a2.sqrt(), s2.sqrt())

    def _linear(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the Wiener filter applied to x, its gain (B, H, W) float64)."""
        g64 = self.gain(t.reshape(-1).expand(x.shape[0]), cond)
        g = g64.to(x.dtype).reshape(x.shape[0], *([1] * (x.dim() - 3)), *g64.shape[-2:])
        return torch.fft.ifft2(torch.fft.fft2(x) * g).real, g64

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self._linear(x, t, cond)[0] + self.inner(x, t, cond)

    def output_and_divergence(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        """(output, tr ∂output/∂x (B,) float64) exactly (the divergence protocol of ``ode.py``): the
        linear part is diagonal in momentum space, so its trace is Σ_k gain_k(t) per channel;
        the wrapped network's comes from its own protocol or autograd."""
        from ..ode import network_divergence

        linear, g64 = self._linear(x, t, cond)
        channels = x[0].numel() // (g64.shape[-2] * g64.shape[-1])
        out, trace = network_divergence(self.inner, x, t, cond)
        return linear + out, g64.to(x.dtype).double().sum((-2, -1)) * channels + trace.double()

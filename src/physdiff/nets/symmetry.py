"""Symmetry wrappers: a denoiser made exactly equivariant by construction."""

from __future__ import annotations

import torch
from torch import nn


class Flattened(nn.Module):
    """A vector network applied to samples of any shape: (B, *shape) → (B, D) → (B, *shape).
    Parameters keep their names (keys prefixed ``inner.``)."""

    def __init__(self, inner: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.inner, self.shape = inner, tuple(shape)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner(x.reshape(x.shape[0], -1), t, cond).reshape(x.shape)

    def output_and_divergence(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        """(output, tr ∂output/∂x (B,) float64): the inner network's (divergence protocol of
        ``ode.py``; a reshape leaves the trace as it is)."""
        from ..ode import network_divergence

        out, trace = network_divergence(self.inner, x.reshape(x.shape[0], -1), t, cond)
        return out.reshape(x.shape), trace


class OddNetwork(nn.Module):
    """ε(x, t) = (f(x, t) − f(−x, t)) / 2: odd in x whatever f is.

    For data with p(x) = p(−x) (φ⁴ without a field, Ising) the noised marginals are symmetric
    too, so the optimal ε(x) = −σ ∇log p_t(x), the optimal x₀ = E[x₀|x] and v are all odd
    in x. An odd network then gives an odd probability-flow drift, whose flow commutes with
    x → −x: the model density satisfies q(x) = q(−x) exactly, and ⟨M⟩ = 0 is not learnt but
    built in. Both evaluations run as one doubled batch. Parameters are those of f (state-dict
    keys prefixed ``inner.``)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        both = self.inner(*self._doubled(x, t, cond))
        plus, minus = both.chunk(2)
        return 0.5 * (plus - minus)

    @staticmethod
    def _doubled(x, t, cond):
        return torch.cat([x, -x]), torch.cat([t, t]), None if cond is None else torch.cat([cond, cond])

    def output_and_divergence(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        """(output, tr ∂output/∂x (B,) float64), the divergence protocol of ``ode.py``: ∂ε/∂x =
        (J_f(x) + J_f(−x))/2, so the trace is the mean of f's at x and at −x, both from one
        doubled batch (f's own protocol, or autograd)."""
        from ..ode import network_divergence

        both, trace = network_divergence(self.inner, *self._doubled(x, t, cond))
        plus, minus = both.chunk(2)
        tr_plus, tr_minus = trace.chunk(2)
        return 0.5 * (plus - minus), 0.5 * (tr_plus + tr_minus)

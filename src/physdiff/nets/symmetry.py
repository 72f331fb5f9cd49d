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
        both = self.inner(torch.cat([x, -x]), torch.cat([t, t]), None if cond is None else torch.cat([cond, cond]))
        plus, minus = both.chunk(2)
        return 0.5 * (plus - minus)

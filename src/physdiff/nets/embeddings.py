"""Embeddings shared by the denoisers: timestep and input Fourier features."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import seeding


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer positional encoding of the timestep (Vaswani et al. 2017, sec. 3.5, as used
    by Ho et al. 2020): [cos(t ω_k), sin(t ω_k)], ω_k = max_period^(-k/(dim/2)). t: (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of t followed by a two-layer MLP: (B,) → (B, out_dim)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # the features in the network's own dtype (float64 in the exactness tests; a no-op in float32)
        return self.mlp(sinusoidal_embedding(t, self.dim).to(self.mlp[0].weight.dtype))


def conditioning(time: TimestepEmbedding, label: nn.Embedding | None, t: torch.Tensor,
                 cond: torch.Tensor | None) -> torch.Tensor:
    """The embedding a denoiser adds in its blocks: time(t), plus label(cond) for a conditional
    network, whose last token (index num_classes) is "no label" (classifier-free guidance) and
    stands in for ``cond = None``. t: (B,) → (B, emb_dim)."""
    emb = time(t)
    if label is None:
        return emb
    if cond is None:
        cond = torch.full((t.shape[0],), label.num_embeddings - 1, device=t.device, dtype=torch.long)
    return emb + label(cond)


class FourierFeatures(nn.Module):
    """Random Fourier features of the input, [cos 2πBx, sin 2πBx] with B ~ N(0, scale²)
    fixed at construction from ``seed`` (Tancik et al. 2020). (B, D) → (B, 2·n_features).
    B is a buffer, saved with the weights."""

    def __init__(self, in_dim: int, n_features: int, scale: float, seed: int = 0):
        super().__init__()
        g = seeding.generator(seed)
        self.register_buffer("B", torch.randn(in_dim, n_features, generator=g) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * x @ self.B
        return torch.cat([torch.cos(proj), torch.sin(proj)], dim=1)

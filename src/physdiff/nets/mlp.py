"""Residual MLP denoiser for vector data (B, D)."""

from __future__ import annotations

import torch
from torch import nn

from .embeddings import FourierFeatures, TimestepEmbedding, conditioning


class ResidualBlock(nn.Module):
    """h + W₂ SiLU(W₁ LayerNorm(h) + emb): pre-norm residual block with additive conditioning."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h, emb):
        return h + self.fc2(self.act(self.fc1(self.norm(h)) + emb))


class ResMLP(nn.Module):
    """Denoiser for (B, D) data: input (and optional Fourier features) → width, ``depth``
    residual blocks conditioned on the timestep (and optional class label), → D.
    The output layer starts at zero, so the untrained model predicts 0."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3, time_dim: int = 64,
                 fourier_features: int = 0, fourier_scale: float = 1.0, num_classes: int = 0):
        super().__init__()
        self.dim, self.num_classes = dim, num_classes
        self.fourier = FourierFeatures(dim, fourier_features, fourier_scale) if fourier_features else None
        in_dim = dim + 2 * fourier_features
        self.inp = nn.Linear(in_dim, width)
        self.time = TimestepEmbedding(time_dim, width)
        # index num_classes is the "no label" token used for classifier-free guidance
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        feats = x if self.fourier is None else torch.cat([x, self.fourier(x)], dim=1)
        h = self.inp(feats)
        emb = conditioning(self.time, self.label, t, cond)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(torch.nn.functional.silu(self.out_norm(h)))

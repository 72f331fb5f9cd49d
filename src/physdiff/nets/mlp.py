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


class SiteMLP(nn.Module):
    """One small network shared by every coordinate: out_i = g(x_i, m, t) with m the mean of
    the coordinates, (B, D) → (B, D).

    On a lattice this is a local nonlinearity with the translation symmetry built in, learnt
    once for all sites: the force of φ⁴'s on-site term λφ_x⁴ is −4λφ_x³, which a flattened MLP
    would have to learn for each of the L² sites separately (and misses where the field is
    magnetised: φ_x = M + δ_x makes the mass of δ depend on M, hence m among the inputs). The
    output layer starts at zero."""

    def __init__(self, width: int, time_dim: int):
        super().__init__()
        self.inp = nn.Linear(2, width)
        self.time = TimestepEmbedding(time_dim, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        act = torch.nn.functional.silu
        feats = torch.stack([x, x.mean(1, keepdim=True).expand_as(x)], dim=-1)
        h = act(self.inp(feats) + self.time(t).unsqueeze(1))
        return self.out(act(self.hidden(h))).squeeze(-1)


class ResMLP(nn.Module):
    """Denoiser for (B, D) data: input (and optional Fourier features) → width, ``depth``
    residual blocks conditioned on the timestep (and optional class label), → D.
    ``site_width`` > 0 adds a :class:`SiteMLP` of that width (a shared per-coordinate term).
    The output layers start at zero, so the untrained model predicts 0."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3, time_dim: int = 64,
                 fourier_features: int = 0, fourier_scale: float = 1.0, num_classes: int = 0,
                 site_width: int = 0):
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
        self.site = SiteMLP(site_width, time_dim) if site_width else None

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        feats = x if self.fourier is None else torch.cat([x, self.fourier(x)], dim=1)
        h = self.inp(feats)
        emb = conditioning(self.time, self.label, t, cond)
        for block in self.blocks:
            h = block(h, emb)
        out = self.out(torch.nn.functional.silu(self.out_norm(h)))
        return out if self.site is None else out + self.site(x, t)

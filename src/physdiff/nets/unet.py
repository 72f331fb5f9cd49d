"""A compact U-Net denoiser for images and periodic lattices, (B, C, H, W) → (B, C, H, W).

The architecture of Ho et al. 2020 (appendix B) scaled down: residual blocks with group norm,
SiLU and an additive time (and label) embedding, self-attention at the lowest resolution,
``len(channel_mult) - 1`` stride-2 down-samplings and nearest-neighbour up-samplings with skip
connections. ``padding="circular"`` makes every convolution periodic, so a lattice with
periodic boundaries is treated as a torus (the network is then equivariant under shifts by
multiples of 2^(levels-1) sites).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import TimestepEmbedding, conditioning

PADDINGS = ("zeros", "circular")


def _groups(channels: int) -> int:
    """The largest of 8, 4, 2, 1 that divides ``channels`` (group norm needs a divisor)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _conv3(cin: int, cout: int, padding: str, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode=padding)


class ResBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x))) + emb))), with a 1×1 skip when channels change."""

    def __init__(self, cin: int, cout: int, emb_dim: int, padding: str, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = _conv3(cin, cout, padding)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3(cout, cout, padding)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions, pre-norm, residual."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        heads = heads if channels % heads == 0 else 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x):
        b, c, h, w = x.shape
        seq = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """U-Net denoiser. ``channels``: width of the first level; level i has
    ``channels * channel_mult[i]`` channels and ``num_res_blocks`` residual blocks on the way
    down (one more on the way up, for the skip of the down-sampling). ``attention``: add
    self-attention at the lowest resolution. ``num_classes`` > 0 adds a label embedding with
    an extra "no label" token (index ``num_classes``) for classifier-free guidance.
    The output convolution starts at zero, so the untrained model predicts 0."""

    def __init__(self, in_channels: int = 1, channels: int = 32, channel_mult=(1, 2), num_res_blocks: int = 1,
                 attention: bool = True, dropout: float = 0.0, padding: str = "zeros", time_dim: int = 64,
                 num_classes: int = 0):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"unknown padding {padding!r}; allowed: {', '.join(PADDINGS)}")
        self.num_classes = num_classes
        emb_dim = 4 * channels
        self.time = TimestepEmbedding(time_dim, emb_dim)
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.inp = _conv3(in_channels, channels, padding)
        widths = [channels * m for m in channel_mult]

        self.down = nn.ModuleList()
        skips, c = [channels], channels
        for level, w in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(c, w, emb_dim, padding, dropout))
                c = w
                skips.append(c)
            if level < len(widths) - 1:
                self.down.append(_conv3(c, c, padding, stride=2))
                skips.append(c)
        self.mid1 = ResBlock(c, c, emb_dim, padding, dropout)
        self.mid_attn = SelfAttention(c) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb_dim, padding, dropout)

        self.up = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), w, emb_dim, padding, dropout))
                c = w
            if level > 0:
                self.up.append(_conv3(c, c, padding))  # after a nearest-neighbour up-sampling
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = _conv3(c, in_channels, padding)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = conditioning(self.time, self.label, t, cond)
        h = self.inp(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:  # up-sample to the size of the next skip (odd sizes such as 7 → 14 work)
                h = layer(F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))

"""Seeds. Every user seed is an integer in [0, 2⁶³ − 1]; physdiff derives others from it
(``seed + 1`` for a second stream, ``base + 1009·seed`` for reference sets), which may leave the
range that torch's generators accept. :func:`generator` reduces any integer modulo 2⁶⁴ (torch's
own range, so seeds inside it are used as they are) before seeding."""

from __future__ import annotations

SEED_RANGE = 2**64  # torch.Generator.manual_seed accepts [0, 2⁶⁴ − 1]


def torch_seed(seed: int) -> int:
    """``seed`` reduced into torch's seed range (the identity for 0 ≤ seed < 2⁶⁴)."""
    return int(seed) % SEED_RANGE


def generator(seed: int, device=None):
    """A torch.Generator on ``device`` seeded with :func:`torch_seed` of ``seed``."""
    import torch

    return torch.Generator(device=device).manual_seed(torch_seed(seed))


__all__ = ["SEED_RANGE", "generator", "torch_seed"]

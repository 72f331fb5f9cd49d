"""Samplers: plain functions of (model, schedule, x_T, ...) returning samples x_0.

``model(x, t, cond)`` is any callable returning the network output (ε, x_0 or v,
named by ``prediction``) with the shape of ``x``; ``t`` is a (B,) int64 tensor of
timestep indices (see ``schedule.py``). Randomness comes only from ``generator``: a
``torch.Generator`` or an :class:`IndexedNoise` (sample i's noise depends only on the
seed and i, not on the batch it falls in). ``callback(i, t, x)`` is called after each
step with the new state; use it for trajectories and progress.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from . import diffusion as dif
from .schedule import Schedule


class IndexedNoise:
    """Gaussian noise for samples ``start, start+1, ..., start+count-1`` in which the draws of
    sample i depend only on ``seed`` and i.

    Samples are grouped in fixed blocks of ``block`` indices, each with its own CPU
    generator seeded from (seed, block number) by NumPy's SeedSequence; every call to
    :meth:`randn_like` advances all blocks by one draw. So the same seed gives the same
    sample i whatever the batch size, the number of ranks, or the device.
    """

    def __init__(self, seed: int, start: int, count: int, block: int = 64):
        if start % block:
            raise ValueError(f"start={start} must be a multiple of the block size {block}")
        self.start, self.count, self.block = start, count, block
        first, last = start // block, (start + count + block - 1) // block
        self.generators = []
        for j in range(first, last):
            state = np.random.SeedSequence([int(seed), j]).generate_state(2, dtype=np.uint32)
            g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            self.generators.append(g)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.count:
            raise ValueError(f"IndexedNoise for {self.count} samples asked for a batch of {x.shape[0]}")
        draws = [torch.randn((self.block, *x.shape[1:]), generator=g) for g in self.generators]
        return torch.cat(draws)[: self.count].to(device=x.device, dtype=x.dtype)


def randn_like(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Standard normal noise shaped like x, from a torch.Generator or an IndexedNoise."""
    if isinstance(generator, IndexedNoise):
        return generator.randn_like(x)
    if generator is not None and generator.device != x.device:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class CountingModel:
    """Wraps a model and counts its evaluations (NFE: one per call on a batch)."""

    def __init__(self, model: Callable):
        self.model, self.nfe = model, 0

    def __call__(self, x, t, cond=None):
        self.nfe += 1
        return self.model(x, t, cond)


def _timestep(i: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)


@torch.no_grad()
def ddpm_sample(model, sched: Schedule, x_T: torch.Tensor, *, prediction: str = "eps",
                variance: str = "beta", clip_x0: float | None = None, cond=None,
                generator=None, callback=None) -> torch.Tensor:
    """Ancestral sampling, Ho et al. 2020 Algorithm 2:
    x_{t-1} = μ_θ(x_t, t) + σ_t z, z ~ N(0, I) for t > 1 and z = 0 at the last step.

    x_T: (B, *data_shape) standard normal. Returns x_0 of the same shape. NFE = T.
    """
    sched = sched.to(x_T.device)
    x = x_T
    for i in reversed(range(sched.T)):
        t = _timestep(i, x)
        mean, var, _ = dif.p_mean_variance(sched, model(x, t, cond), x, t, prediction=prediction,
                                           variance=variance, clip_x0=clip_x0)
        x = mean + var.sqrt() * randn_like(x, generator) if i > 0 else mean
        if callback is not None:
            callback(i, t, x)
    return x


def sample_with_trajectory(sampler, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``sampler`` and also return every intermediate state, stacked: (steps, B, ...)."""
    states = []
    user_cb = kwargs.pop("callback", None)

    def keep(i, t, x):
        states.append(x.detach().cpu())
        if user_cb is not None:
            user_cb(i, t, x)

    out = sampler(*args, callback=keep, **kwargs)
    return out, torch.stack(states)

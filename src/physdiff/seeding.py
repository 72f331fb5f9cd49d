"""Seeds. Every user seed is an integer in [0, 2⁶³ − 1]; physdiff derives others from it
(``seed + 1`` for a second stream, ``base + 1009·seed`` for reference sets), which may leave the
range that torch's generators accept. :func:`generator` reduces any integer modulo 2⁶⁴ (torch's
own range, so seeds inside it are used as they are) before seeding."""

from __future__ import annotations

import numbers

from .errors import PhysdiffError

SEED_RANGE = 2**64  # torch.Generator.manual_seed accepts [0, 2⁶⁴ − 1]
MAX_SEED = 2**63 - 1  # the largest seed a user may give


def check_seed(seed, name: str = "seed") -> int:
    """A seed as a Python int, or a PhysdiffError naming ``name`` and the allowed range: an
    integer (Python or NumPy; not a bool, a float or a string) >= 0. The one check of the
    library's entry points (``mc.run_mcmc``, ``exact_sampler.sample_exact``, ``LoadedRun.sample``).
    A user's seed is one of 0 .. 2⁶³ − 1 (the command line refuses others); seeds physdiff derives
    from it (``seed + 1``, ``base + 1009·seed``: module docstring) reach the same entry points and may
    be larger, so no upper bound is imposed here: every generator reduces them (:func:`torch_seed`;
    NumPy's take any integer >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise PhysdiffError(f"{name} = {seed!r} is not allowed; allowed: an integer >= 0 (a seed of your own: "
                            "0 to 2**63 - 1)")
    return int(seed)


def torch_seed(seed: int) -> int:
    """``seed`` reduced into torch's seed range (the identity for 0 ≤ seed < 2⁶⁴)."""
    return int(seed) % SEED_RANGE


def generator(seed: int, device=None):
    """A torch.Generator on ``device`` seeded with :func:`torch_seed` of ``seed``."""
    import torch

    return torch.Generator(device=device).manual_seed(torch_seed(seed))


__all__ = ["MAX_SEED", "SEED_RANGE", "check_seed", "generator", "torch_seed"]

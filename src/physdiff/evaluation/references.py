"""The one noise-floor policy of physdiff evaluation.

A distance between model samples and true data is only meaningful beside its *noise floor*:
the same distance between independent true sets of the same size, the level a perfect model
would reach. For a dataset with a sampler (toy data) the true sets are fresh draws with seeds
far from the training seed; for a user's file, two disjoint halves of it; for images, the
training split against the held-out test split (``images.py``).
"""

from __future__ import annotations

import numpy as np

from ..data import load_array, toy_for

REFERENCE_SEED_BASE = 1_000_003  # far from training seeds (0, 1, ...), so no set repeats the training data


def reference_sets(run, n: int, seed: int, repeats: int = 5):
    """(references, floor_references, toy, n): ``repeats`` pairs of independent true sets of n
    samples (one pair, disjoint halves of the file, for a user's data file; n is then capped
    at half its rows)."""
    toy = toy_for(run.cfg.data)
    if toy is not None:
        base = REFERENCE_SEED_BASE + 1009 * seed
        refs = [toy.sample(n, base + 2 * r) for r in range(repeats)]
        floors = [toy.sample(n, base + 2 * r + 1) for r in range(repeats)]
        return refs, floors, toy, n
    from pathlib import Path

    from ..errors import PhysdiffError

    if not Path(run.cfg.data.file).is_file():
        raise PhysdiffError(f"the run's data file {run.cfg.data.file!r} is no longer there (moved?); put it back at "
                            "that path (its fingerprint in state.safetensors tells whether it is the same data)")
    data = load_array(run.cfg.data.file)
    perm = np.random.default_rng(seed).permutation(len(data))
    m = min(n, len(data) // 2)
    return [data[perm[:m]]], [data[perm[m:2 * m]]], None, m

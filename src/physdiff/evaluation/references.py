"""The one noise-floor policy of physdiff evaluation.

A distance between model samples and true data is only meaningful beside its *noise floor*:
the same distance between independent true sets of the same size, the level a perfect model
would reach. For a dataset with a sampler (toy data) the true sets are fresh draws with seeds
far from the training seed; for a user's file whose run held rows out of training (its
validation.npy), the held-out rows against equal-size parts of the training rows, one pair per
part (a model that copies its training rows reaches this floor too: ``vectors.py`` checks
memorisation against the same split); for the file of a run that held nothing out (runs of
config version <= 5, or data.validation_fraction = 0), two disjoint halves of it; for images,
the training split against the held-out test split (``images.py``).
"""

from __future__ import annotations

import numpy as np

from ..checkpoint import VALIDATION_FILE
from ..data import check_fingerprint, check_held_out, load_array, read_npy, split_rows, toy_for
from ..errors import PhysdiffError

REFERENCE_SEED_BASE = 1_000_003  # far from training seeds (0, 1, ...), so no set repeats the training data


def reference_sets(run, n: int, seed: int, repeats: int = 5):
    """(references, floor_references, toy, n): ``repeats`` pairs of independent true sets of n
    samples. A run on a user's file with held-out rows: n is capped at their number, every
    reference is the same n held-out rows and the floor references are disjoint parts of the
    training rows (as many as they hold, at most ``repeats``). A file's run without held-out rows:
    one pair, disjoint halves of the file; n is then capped at half its rows."""
    toy = toy_for(run.cfg.data)
    if toy is not None:
        base = REFERENCE_SEED_BASE + 1009 * seed
        refs = [toy.sample(n, base + 2 * r) for r in range(repeats)]
        floors = [toy.sample(n, base + 2 * r + 1) for r in range(repeats)]
        return refs, floors, toy, n
    rng = np.random.default_rng(seed)
    split = held_out_split(run)
    if split is not None:
        train, held = split
        m = min(n, len(held))
        reference = held[np.sort(rng.permutation(len(held))[:m])]
        perm = rng.permutation(len(train))
        pairs = max(1, min(repeats, len(train) // m))
        return [reference] * pairs, [train[perm[r * m:(r + 1) * m]] for r in range(pairs)], None, m
    data, _ = _run_data(run)
    perm = rng.permutation(len(data))
    m = min(n, len(data) // 2)
    return [data[perm[:m]]], [data[perm[m:2 * m]]], None, m


def _run_data(run) -> tuple[np.ndarray, np.ndarray | None]:
    """(the rows of the run's data file, the held-out rows its validation.npy names or None), both
    checked against what the run learnt: the record is the split training drew (as many rows as
    data.validation_fraction of the file's, distinct, in range) and the training rows are those the
    weights were trained on (their fingerprint is the one the run recorded), else one line."""
    from pathlib import Path

    from ..checkpoint import learnt_fingerprint

    d = run.cfg.data
    if not Path(d.file).is_file():
        raise PhysdiffError(f"the run's data file {d.file!r} is no longer there (moved?); put it back at that path "
                            "(its fingerprint in state.safetensors tells whether it is the same data)")
    data = load_array(d.file)
    held = None
    if d.validation_fraction > 0:
        path = run.path / VALIDATION_FILE
        if not path.is_file():
            raise PhysdiffError(f"run {str(run.path)!r} held data.validation_fraction = {d.validation_fraction:g} of "
                                f"its data out of training, but its record of those rows ({VALIDATION_FILE}) is "
                                "missing; restore it from a copy of the run")
        held = check_held_out(read_npy(path, "held-out rows"), len(data), f"{str(path)!r}", d.validation_fraction)
    check_fingerprint(data if held is None else split_rows(data, held)[0],
                      learnt_fingerprint(run.path, getattr(run, "learnt", None)), d.file, str(run.path))
    return data, held


def held_out_split(run) -> tuple[np.ndarray, np.ndarray] | None:
    """(training rows, held-out rows) of a run on a user's file that held rows out of training,
    exactly as training split them (the rows its validation.npy names); None for any other run
    (toy, image and lattice data, and a file's run of config version <= 5 or with
    data.validation_fraction = 0, which trained on every row)."""
    d = run.cfg.data
    if not d.file or d.validation_fraction <= 0:
        return None
    data, held = _run_data(run)
    return split_rows(data, held)

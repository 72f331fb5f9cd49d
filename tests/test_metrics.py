import math

import numpy as np
import pytest

from physdiff import metrics
from physdiff.data import get_toy
from physdiff.metrics import compare, energy_distance, sliced_wasserstein


def test_sliced_wasserstein_of_a_shift():
    """SW₂ of x and x + δ is ‖δ‖ (E[(θ·δ)²])^½ = ‖δ‖/√D for θ uniform on the sphere."""
    x = np.random.default_rng(0).normal(size=(4000, 2))
    delta = np.array([0.3, -0.4])
    assert sliced_wasserstein(x, x) == 0
    assert sliced_wasserstein(x, x + delta, n_projections=4000) == pytest.approx(0.5 / math.sqrt(2), rel=0.03)


def test_energy_distance_of_1d_gaussians():
    """ED(N(0,1), N(δ,1)) = 2E|N(δ,2)| - 2·(2/√π), E|N(δ,2)| the folded-normal mean."""
    rng = np.random.default_rng(1)
    d = 1.0
    x, y = rng.normal(size=(6000, 1)), rng.normal(size=(6000, 1)) + d
    s = math.sqrt(2.0)
    folded = s * math.sqrt(2 / math.pi) * math.exp(-d * d / (2 * s * s)) + d * math.erf(d / (s * math.sqrt(2)))
    expect = 2 * folded - 2 * (2 / math.sqrt(math.pi))
    assert energy_distance(x, y) == pytest.approx(expect, rel=0.06)
    assert abs(energy_distance(x, rng.normal(size=(6000, 1)))) < 0.01


def test_true_samples_sit_at_the_noise_floor_and_a_bad_model_does_not():
    toy = get_toy("two_gaussians")
    refs = [toy.sample(3000, 10 + r) for r in range(4)]
    floors = [toy.sample(3000, 20 + r) for r in range(4)]
    goods = [compare(toy.sample(3000, 90 + s), refs, floors, toy=toy) for s in range(5)]
    good = goods[0]
    bad = compare(toy.sample(3000, 99) * 1.3, refs, floors, toy=toy)
    # a single draw is noisy (bimodal data: the share of each mode fluctuates), the median is not
    for name in ("sliced_wasserstein", "mean_error"):
        assert np.median([g[name]["value"] / g[name]["floor"] for g in goods]) < 1.5, name
    assert bad["sliced_wasserstein"]["value"] > 4 * bad["sliced_wasserstein"]["floor"]
    assert bad["cov_error"]["value"] > 4 * bad["cov_error"]["floor"]
    assert good["log_density"]["value"] == pytest.approx(good["log_density"]["floor"], abs=0.05)
    assert bad["log_density"]["value"] < good["log_density"]["value"] - 0.1


def test_frechet_distance_with_singular_covariances():
    """Fewer samples than features (singular Σ, round-off eigenvalues just below zero): the
    distance of a set to itself is 0 and to a shifted copy is the squared shift, finite —
    without the clipping of negative eigenvalues a square root of one is NaN."""
    rng = np.random.default_rng(0)
    f = rng.normal(size=(10, 40)) @ rng.normal(size=(40, 40))
    scale = np.trace(np.cov(f, rowvar=False))  # round-off is relative to it
    assert abs(metrics.frechet_distance(f, f)) < 1e-6 * scale
    shift = np.full(40, 0.5)
    assert metrics.frechet_distance(f, f + shift) == pytest.approx(float(shift @ shift), abs=1e-6 * scale)

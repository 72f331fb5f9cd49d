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


def test_mean_and_covariance_errors_against_hand_values():
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    assert metrics.mean_error(x, [2.0, 5.0]) == pytest.approx(1.0)  # mean (2, 4)
    # np.cov with N-1: var 2, 8, cov 4; against [[1, 0], [0, 8]]: |(1, 4, 4, 0)| = √33
    assert metrics.covariance_error(x, [[1.0, 0.0], [0.0, 8.0]]) == pytest.approx(math.sqrt(33))


def test_nearest_and_coverage_in_chunks_match_brute_force():
    import torch

    rng = np.random.default_rng(0)
    q, s = rng.normal(size=(11, 3)), rng.normal(size=(7, 3))
    d_all = np.linalg.norm(q[:, None] - s[None], axis=-1)
    dist, idx = metrics.nearest(q, s, chunk=4)
    np.testing.assert_allclose(dist, d_all.min(1), rtol=1e-6)
    np.testing.assert_array_equal(idx, d_all.argmin(1))
    radii = torch.full((7,), 1.0, dtype=torch.float64)
    got = metrics._covered(torch.from_numpy(q), torch.from_numpy(s), radii, chunk=4)
    np.testing.assert_array_equal(got.numpy(), (d_all <= 1.0).any(1))


def test_precision_recall_balls_are_closed_and_use_the_kth_other_point():
    """Kynkäänniemi et al. 2019: φ is covered if ‖φ - φ'‖ ≤ ‖φ' - NN_k(φ')‖ for some φ'.
    Support {0, 1, 3} on a line, k = 1: radii 1, 1, 2; the query -1 lies exactly on the ball of 0."""
    import torch

    support = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    radii = metrics._kth_neighbour_radius(support, 1)
    torch.testing.assert_close(radii, torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(metrics._kth_neighbour_radius(support, 2), torch.tensor([3.0, 2.0, 3.0],
                                                                                          dtype=torch.float64))
    torch.testing.assert_close(metrics._kth_neighbour_radius(support[:2], 5), torch.tensor([1.0, 1.0],
                                                                                              dtype=torch.float64))
    query = torch.tensor([[-1.0], [-1.5]], dtype=torch.float64)
    assert metrics._covered(query, support, radii).tolist() == [True, False]
    with pytest.raises(ValueError, match="at least 2"):
        metrics._kth_neighbour_radius(support[:1], 1)
    real = np.random.default_rng(1).normal(size=(60, 2))
    fake = np.random.default_rng(2).normal(size=(60, 2)) + 0.5
    assert metrics.precision_recall(real, fake) == metrics.precision_recall(real, fake, k=3)  # the paper's k


def test_compare_rows_and_seed():
    rng = np.random.default_rng(3)
    sets = [rng.normal(size=(80, 2)) for _ in range(5)]
    out = compare(sets[0], sets[1:3], sets[3:5])
    assert set(out) == {"sliced_wasserstein", "energy_distance"}  # no toy: no mixture or density rows
    again = compare(sets[0], sets[1:3], sets[3:5], seed=0, n_projections=512)
    assert out == again
    other = compare(sets[0], sets[1:3], sets[3:5], seed=1)
    assert other["sliced_wasserstein"] != out["sliced_wasserstein"]
    assert other["energy_distance"] == out["energy_distance"]
    with pytest.raises(ValueError):
        compare(sets[0], sets[1:3], sets[3:4])  # one floor set per reference


def test_memorisation_report_keys():
    rng = np.random.default_rng(4)
    train, test = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    rep = metrics.memorisation(rng.normal(size=(40, 2)), train, test)
    assert set(rep) >= {"share", "expected_for_fresh_data", "threshold", "median_nn_distance",
                        "median_nn_distance_test"}


def test_far_outliers_use_a_margin_of_the_data_width():
    """A row is far when some value is outside [lo − m·w, hi + m·w], w = hi − lo, per dimension."""
    lo, hi = np.array([0.0, -1.0]), np.array([1.0, 3.0])  # widths 1 and 4
    x = np.array([[1.5, 0.0], [1.49, 4.9], [-0.51, 0.0], [0.5, -3.1], [0.5, 7.1], [-0.49, -2.9]])
    np.testing.assert_array_equal(metrics.far_outliers(x, lo, hi, 0.5), [False, False, True, True, True, False])
    np.testing.assert_array_equal(metrics.far_outliers(x, lo, hi, 2.0), [False] * 6)
    imgs = np.zeros((3, 1, 2, 2))
    imgs[1, 0, 1, 1] = 2.5  # images: any pixel of a sample
    np.testing.assert_array_equal(metrics.far_outliers(imgs, 0.0, 1.0, 1.0), [False, True, False])


def test_compare_rows_with_a_toy_against_hand_computation():
    """With a toy: mean and covariance errors against the mixture's moments, each floor the RMS
    over the floor sets; the exact log-density rows read the first floor set."""
    toy = get_toy("two_gaussians")
    refs = [toy.sample(400, 30 + r) for r in range(2)]
    floors = [toy.sample(400, 40 + r) for r in range(2)]
    samples = toy.sample(400, 50) * 1.2
    out = compare(samples, refs, floors, toy=toy)
    mu, cov = toy.mixture.mean().numpy(), toy.mixture.covariance().numpy()
    assert out["mean_error"]["value"] == pytest.approx(metrics.mean_error(samples, mu))
    assert out["mean_error"]["floor"] == pytest.approx(
        np.sqrt(np.mean([metrics.mean_error(f, mu) ** 2 for f in floors])))
    assert out["cov_error"]["floor"] == pytest.approx(
        np.sqrt(np.mean([metrics.covariance_error(f, cov) ** 2 for f in floors])))
    lp = toy.log_prob(samples)
    assert out["in_support"] == {"value": 1.0, "floor": 1.0}  # a Gaussian mixture: no zero density
    assert out["log_density"]["value"] == pytest.approx(float(lp[np.isfinite(lp)].mean()))
    assert out["log_density"]["floor"] == pytest.approx(float(toy.log_prob(floors[0]).mean()))


def test_energy_distance_is_the_unbiased_u_statistic():
    """x = {0, 1}, y = {0, 3}: 2·mean|x−y| = 2·(0+3+1+2)/4 = 3, mean_{i≠j}|x_i−x_j| = 1, the same
    for y = 3: ED = −1 (the unbiased form can be negative). The chunked sum is the same."""
    import torch

    x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [3.0]])
    assert energy_distance(x, y) == pytest.approx(-1.0)
    a = torch.arange(5.0)[:, None]
    assert metrics._mean_pairwise_distance(a, a, True, chunk=2) == pytest.approx(2.0)  # 40 / 20 pairs
    assert metrics._mean_pairwise_distance(a, a[:2], False, chunk=2) == pytest.approx(1.7)  # 17 / 10


def test_schedule_to_the_same_device_is_the_same_object():
    from physdiff.schedule import make_schedule

    s = make_schedule("linear", 10)
    assert s.to("cpu") is s

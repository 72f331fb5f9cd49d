import math
import os
import warnings

import numpy as np
import pytest
import torch

from physdiff.schedule import SCHEDULES, Schedule, ScheduleWarning, make_schedule, warn_if_signal_left


def test_linear_matches_ho_et_al_at_T_1000():
    s = make_schedule("linear", 1000)
    assert float(s.betas[0]) == pytest.approx(1e-4, rel=1e-12)
    assert float(s.betas[-1]) == pytest.approx(0.02, rel=1e-12)  # β_T at index T-1


def test_linear_rescaled_for_other_T_keeps_total_noise():
    ref = make_schedule("linear", 1000)
    for T in (50, 100, 250):
        s = make_schedule("linear", T)
        assert float(s.betas[0]) == pytest.approx(1e-4 * 1000 / T)
        assert float(s.betas[-1]) == pytest.approx(0.02 * 1000 / T)
        # Σβ ≈ -log ᾱ_T: comparable to T = 1000 (within 10%)
        assert float(s.betas.sum()) == pytest.approx(float(ref.betas.sum()), rel=0.1)


def test_cosine_alpha_bar_matches_nichol_dhariwal_eq17():
    T, s_off = 1000, 0.008
    s = make_schedule("cosine", T)

    def f(t):
        return math.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2

    for t in (1, 10, 500, 900):  # paper step t = index t-1, away from the clipped end
        assert float(s.alpha_bar[t - 1]) == pytest.approx(f(t) / f(0), rel=1e-10)
    assert float(s.betas.max()) <= 0.999


def test_sigmoid_alpha_bar_matches_chen_2023():
    T = 200
    s = make_schedule("sigmoid", T)

    def sig(z):
        return 1 / (1 + math.exp(-z))

    for t in (1, 50, 150):
        expect = (sig(3) - sig(t / T * 6 - 3)) / (sig(3) - sig(-3))
        assert float(s.alpha_bar[t - 1]) == pytest.approx(expect, rel=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [10, 100, 1000])
def test_derived_tables_invariants(name, T):
    s = make_schedule(name, T, warn=False)
    b = s.betas.numpy()
    assert s.betas.dtype == torch.float64
    assert np.all((b > 0) & (b <= 0.999))
    ab = np.cumprod(1 - b)
    np.testing.assert_allclose(s.alpha_bar.numpy(), ab, rtol=1e-12)
    np.testing.assert_allclose(s.alpha_bar_prev.numpy(), np.concatenate([[1.0], ab[:-1]]), rtol=1e-12)
    assert np.all(np.diff(ab) < 0)
    # β̃_t = (1 - ᾱ_{t-1})/(1 - ᾱ_t) β_t; β̃ at the first step is 0 and β̃ ≤ β
    post = (1 - s.alpha_bar_prev.numpy()) / (1 - ab) * b
    np.testing.assert_allclose(s.posterior_variance.numpy(), post, rtol=1e-12)
    assert s.posterior_variance[0] == 0
    assert np.all(post <= b + 1e-15)


@pytest.mark.parametrize("name", SCHEDULES)
def test_default_schedules_end_at_noise(name):
    s = make_schedule(name, 1000)
    assert float(s.sqrt_alpha_bar[-1]) < 1e-2


def test_schedule_that_leaves_signal_warns():
    # tiny-diffusion's schedule: T = 50, linear 1e-4 … 0.02 without rescaling keeps √ᾱ_T ≈ 0.77
    s = Schedule("linear", torch.linspace(1e-4, 0.02, 50, dtype=torch.float64))
    assert float(s.sqrt_alpha_bar[-1]) == pytest.approx(0.77, abs=0.01)
    with pytest.warns(ScheduleWarning, match="wrong prior"):
        assert warn_if_signal_left(s)
    with pytest.warns(ScheduleWarning):
        make_schedule("linear", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_schedule("linear", 1000)


def test_bad_arguments():
    with pytest.raises(ValueError, match="allowed"):
        make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match=">= 1"):
        make_schedule("linear", 0)


def test_at_broadcasts_to_any_shape():
    s = make_schedule("linear", 100)
    t = torch.tensor([0, 5, 99])
    for shape in [(3, 2), (3, 1, 8, 8)]:
        v = s.at("alpha_bar", t, torch.zeros(shape, dtype=torch.float32))
        assert v.shape == (3,) + (1,) * (len(shape) - 1)
        assert v.dtype == torch.float32
        np.testing.assert_allclose(v.flatten().numpy(), s.alpha_bar[t].numpy(), rtol=1e-6)


def test_sigmoid_schedule_follows_chen_2023():
    """ᾱ(τ) = (σ(e/τ') - σ((τ(e-s)+s)/τ')) / (σ(e/τ') - σ(s/τ')) (Chen 2023, Alg. 1; τ' the
    temperature), written here with σ(z) = (1 + tanh(z/2))/2; a temperature other than 1 tells
    s/τ' from s·τ'. ᾱ(0) = 1 and the schedule reads ᾱ at τ = (t+1)/T for index t."""
    from physdiff.schedule import sigmoid_betas

    T, s, e, temp = 40, -2.0, 4.0, 0.7
    ab = np.cumprod(1 - sigmoid_betas(T, s, e, temp))
    tau = np.arange(1, T + 1) / T

    def th(z):
        return np.tanh(z / (2 * temp))

    want = (th(e) - th(tau * (e - s) + s)) / (th(e) - th(s))
    np.testing.assert_allclose(ab[:-1], want[:-1], rtol=1e-10)
    assert sigmoid_betas(T, s, e, temp)[-1] == 0.999  # ᾱ(1) = 0: the last β is clipped


def test_cosine_schedule_follows_nichol_dhariwal():
    """ᾱ_t = f(t)/f(0), f(t) = cos²(π/2 (t/T + s)/(1 + s)) (eq. 17): index t is paper step t + 1."""
    T, s = 100, 0.008
    ab = make_schedule("cosine", T).alpha_bar.numpy()
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(ab[:50], f[1:51] / f[0], rtol=1e-12)


@pytest.mark.parametrize("spacing", ["uniform", "quadratic", "trailing", "logsnr", "karras"])
def test_timestep_subsequence_ends_and_full_count(spacing):
    """K = 1 is the last index alone; K = T is every index; K = 2 spans both ends (trailing: the
    top half's end); the indices are distinct and ascending."""
    from physdiff.schedule import timestep_subsequence

    sched = make_schedule("linear", 30)
    kw = {"sched": sched} if spacing in ("logsnr", "karras") else {}  # the others need no schedule
    assert timestep_subsequence(30, 1, spacing, **kw) == [29]
    assert timestep_subsequence(30, 30, spacing, **kw) == list(range(30))
    assert timestep_subsequence(30, 2, spacing, **kw) == ([14, 29] if spacing == "trailing" else [0, 29])
    for K in (3, 7, 16, 29):
        taus = timestep_subsequence(30, K, spacing, **kw)
        assert len(taus) == K and taus == sorted(set(taus)) and taus[-1] == 29 and taus[0] >= 0


def test_timestep_subsequence_values():
    """Hand values: uniform round(linspace(0, T-1, K)); quadratic round(linspace(0, √(T-1), K)²);
    trailing round(T - iT/K) - 1 (Lin et al. 2024, Table 2)."""
    from physdiff.schedule import timestep_subsequence

    assert timestep_subsequence(1000, 5, "uniform") == [0, 250, 500, 749, 999]
    assert timestep_subsequence(100, 4, "quadratic") == [0, 11, 44, 99]
    assert timestep_subsequence(100, 4, "trailing") == [24, 49, 74, 99]


def test_signal_warning_points_at_the_caller_and_says_what_to_do():
    good = make_schedule("linear", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_signal_left(good) is False
    with pytest.warns(ScheduleWarning, match="Use more timesteps or another schedule") as record:
        make_schedule("linear", 2)
    if "MUTANT_UNDER_TEST" not in os.environ:  # mutmut's trampoline adds stack frames
        assert record[0].filename == __file__  # stacklevel: the user's line, not the library's


def test_continuous_time_inverts_alpha_bar_at_and_matches_the_ode_clock():
    """t(u) at the tabulated log σ̄ is the integer index; alpha_bar_at(t(u)) gives back σ̄ = e^u;
    the ODE's torch clock (Drift.time_index) is the same function."""
    from physdiff.ode import Drift
    from physdiff.schedule import alpha_bar_at, continuous_time, log_sigma_bar

    sched = make_schedule("cosine", 50)
    u = log_sigma_bar(sched)
    np.testing.assert_allclose(continuous_time(sched, u), np.arange(50), atol=1e-9)
    mid = (u[:-1] + u[1:]) / 2
    t = continuous_time(sched, mid)
    np.testing.assert_allclose(t, np.arange(49) + 0.5, atol=1e-9)
    ab = alpha_bar_at(sched, t)
    np.testing.assert_allclose(0.5 * np.log((1 - ab) / ab), mid, rtol=1e-9)
    drift = Drift(lambda x, t, c=None: x, sched, "eps")
    for v in (u[0], mid[10], u[-1], u[-1] + 3.0):
        assert float(drift.time_index(torch.tensor(v))) == pytest.approx(float(continuous_time(sched, v)), abs=1e-9)


def test_schedule_tables_are_float64_and_the_clipped_log_variance_repeats_the_second():
    """betas are stored as float64 whatever the input; α = 1 − β; log β̃ clipped: index 0 takes
    β̃ at index 1 (β̃_0 = 0), the rest is log β̃ (improved-diffusion's posterior_log_variance_clipped)."""
    s = Schedule("x", torch.tensor([0.1, 0.2, 0.3], dtype=torch.float32))
    assert s.betas.dtype == torch.float64
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    bt = s.posterior_variance
    torch.testing.assert_close(s.posterior_log_variance_clipped, torch.log(torch.stack([bt[1], bt[1], bt[2]])))
    one = make_schedule("linear", 1, warn=False)  # one step: a valid (if useless) schedule
    assert one.T == 1 and one.posterior_log_variance_clipped.shape == (1,)


def test_make_schedule_defaults():
    s = make_schedule()
    assert (s.name, s.T) == ("linear", 1000)

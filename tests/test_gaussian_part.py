"""The exact Gaussian-field denoiser added to lattice networks (nets/gaussian.py) and the shared
per-site network (nets/mlp.py): closed forms, symmetries, and old runs without them."""

import numpy as np
import pytest
import torch

from physdiff import ode
from physdiff.analytic import GaussianMixture, OptimalEpsilon
from physdiff.config import config_from_dict
from physdiff.nets import ResMLP, SpectralGaussian, build_model
from physdiff.nets.gaussian import lattice_power_spectrum
from physdiff.schedule import log_sigma_bar, make_schedule

L = 4


class Zero(torch.nn.Module):
    def forward(self, x, t, cond=None):
        return torch.zeros_like(x)


def _free_field_power(kappa=0.2):
    """Power spectrum of the free lattice field, P_k = 1 / (2 − 4κ Σ_μ cos k_μ) (a valid,
    non-flat spectrum: every test below would fail with a flat one too)."""
    k = 2 * np.pi * np.arange(L) / L
    return 1.0 / (2.0 - 4 * kappa * (np.cos(k)[:, None] + np.cos(k)[None, :]))


def _covariance(power):
    """The dense V×V covariance C = F⁻¹ diag(P) F of a translation-invariant field."""
    V = L * L
    basis = np.eye(V).reshape(V, L, L)
    cols = np.fft.ifft2(np.fft.fft2(basis) * power).real.reshape(V, V)
    return cols.T


def _model(power, prediction, T=1000):
    sched = make_schedule("linear", T)
    m = SpectralGaussian(Zero(), (1, L, L), log_sigma_bar(sched), prediction).double()
    m.power.copy_(torch.from_numpy(power))
    return m, sched


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_gain_is_the_exact_gaussian_denoiser(prediction):
    """At every t, the output equals the closed-form E[ε|x_t], E[x₀|x_t] or E[v|x_t] of the
    Gaussian N(0, C) computed with dense matrices: s (a²C + s²)⁻¹ x, a C (a²C + s²)⁻¹ x and
    a·E[ε] − s·E[x₀]. A wrong index (ᾱ_{t±1}), a swapped α/σ or a wrong sign fails it."""
    power = _free_field_power()
    model, sched = _model(power, prediction)
    C = _covariance(power)
    x = torch.randn(5, 1, L, L, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    flat = x.reshape(5, -1).numpy()
    for t in (0, 1, 37, 500, 998, 999):
        ab = float(sched.alpha_bar[t])
        a, s = np.sqrt(ab), np.sqrt(1 - ab)
        solve = np.linalg.solve(ab * C + (1 - ab) * np.eye(L * L), flat.T).T
        want = {"eps": s * solve, "x0": a * solve @ C.T}
        want["v"] = a * want["eps"] - s * want["x0"]
        got = model(x, torch.full((5,), float(t), dtype=torch.float64)).reshape(5, -1).numpy()
        np.testing.assert_allclose(got, want[prediction], atol=1e-9, rtol=1e-7)


def test_eps_part_equals_the_optimal_epsilon_and_its_flow_density():
    """Against the library's independent exact denoiser of N(0, C) (analytic.OptimalEpsilon),
    and end to end: the ODE with the Gaussian part alone draws from N(0, C) with log q equal to
    the exact change of variables (as test_ode does for the exact denoiser)."""
    power = _free_field_power(0.22)
    model, sched = _model(power, "eps")
    mix = GaussianMixture([np.zeros(L * L)], [_covariance(power)])
    exact = OptimalEpsilon(mix, sched)
    x = torch.randn(6, L * L, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0, 5, 100, 400, 900, 999])
    got = model(x.reshape(6, 1, L, L), t.double()).reshape(6, -1)
    torch.testing.assert_close(got, exact(x, t), atol=1e-9, rtol=1e-7)

    flat = _FlatGaussian(model)
    x_T = torch.randn(32, L * L, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    res = ode.sample_with_log_prob(flat, sched, x_T, prediction="eps", steps=24)
    p0, pT = mix.noised(float(sched.alpha_bar[0])), mix.noised(float(sched.alpha_bar[-1]))
    want = p0.log_prob(res.x) + ode.standard_normal_log_prob(x_T) - pT.log_prob(x_T)
    assert float((res.log_prob - want).abs().max()) / (L * L) < 1e-3


class _FlatGaussian(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, t, cond=None):
        return self.inner(x.reshape(-1, 1, L, L), t).reshape(x.shape)


def test_fractional_time_reads_the_schedule_as_the_ode_does():
    """Between integer indices log σ̄ is interpolated linearly (as ode.Drift does), so the
    gain at t = 10.25 is the Gaussian's at ᾱ = 1/(1 + σ̄²) of the interpolated σ̄."""
    power = _free_field_power()
    model, sched = _model(power, "eps")
    u = np.interp(10.25, np.arange(sched.T), log_sigma_bar(sched))
    ab = 1 / (1 + np.exp(2 * u))
    want = np.sqrt(1 - ab) / (ab * power + 1 - ab)
    got = model.gain(torch.tensor([10.25], dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_power_spectrum_is_measured_with_the_lattice_symmetries():
    """Fields drawn from N(0, C) give back P within sampling error; the estimate is symmetric
    under k → −k and the axis swap, and a constant field puts everything in the zero mode."""
    power = _free_field_power()
    rng = np.random.default_rng(3)
    chol = np.linalg.cholesky(_covariance(power))
    x = torch.from_numpy((rng.normal(size=(40_000, L * L)) @ chol.T).reshape(-1, 1, L, L))
    est = lattice_power_spectrum(x).numpy()
    np.testing.assert_allclose(est, power, rtol=0.03)
    np.testing.assert_allclose(est, est.T)
    np.testing.assert_allclose(est, np.roll(np.flip(est, 0), 1, 0))
    const = lattice_power_spectrum(torch.full((3, 1, L, L), 2.0)).numpy()
    assert const[0, 0] == pytest.approx(4.0 * L * L) and np.abs(const.ravel()[1:]).max() < 1e-9


def test_gaussian_part_keeps_the_symmetries():
    """The linear part commutes with translations and x → −x, so an odd, translation-covariant
    network stays so; the site network is shared by every site (covariant by construction)."""
    model, _ = _model(_free_field_power(), "v")
    x = torch.randn(3, 1, L, L, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t = torch.full((3,), 250.0, dtype=torch.float64)
    torch.testing.assert_close(model(-x, t), -model(x, t))
    torch.testing.assert_close(model(torch.roll(x, (1, 2), (-2, -1)), t), torch.roll(model(x, t), (1, 2), (-2, -1)))
    net = ResMLP(L * L, width=16, depth=1, site_width=8)
    torch.nn.init.normal_(net.site.out.weight)
    net.out.weight.data.zero_()  # the site term alone
    flat, t = x.reshape(3, -1).float(), t.float()
    perm = torch.randperm(L * L, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(net(flat[:, perm], t), net(flat, t)[:, perm])


def test_lattice_runs_get_them_and_old_runs_load_without():
    """A new φ⁴ config builds the Gaussian part and the site network; a version-2 run config
    (written before both) builds neither, so its weights still load."""
    new = config_from_dict({"data": {"dataset": "phi4", "L": L}})
    from physdiff.data.kinds import resolve_kind

    model = build_model(new.model, (1, L, L), 0, resolve_kind(new.data), new.diffusion)
    assert isinstance(model, SpectralGaussian) and new.model.mlp.site_width > 0
    old = config_from_dict({"version": 2, "data": {"dataset": "phi4", "L": L}, "model": {"mlp": {"width": 32}}})
    assert old.model.gaussian == "none" and old.model.mlp.site_width == 0
    assert not isinstance(build_model(old.model, (1, L, L), 0, resolve_kind(old.data), old.diffusion),
                          SpectralGaussian)
    spins = config_from_dict({"data": {"dataset": "ising", "L": L, "embedding": "none"}})  # measured worse with them
    assert spins.model.gaussian == "none" and spins.model.mlp.site_width == 0
    embedded = config_from_dict({"data": {"dataset": "ising", "L": L}})  # the Hubbard–Stratonovich x: φ⁴'s network
    assert embedded.model.gaussian == "auto" and embedded.model.mlp.site_width > 0
    toy = config_from_dict({"data": {"dataset": "spiral"}})
    assert not isinstance(build_model(toy.model, (2,), 0, resolve_kind(toy.data), toy.diffusion), SpectralGaussian)

"""The divergence protocol of ode.py: a network (or wrapper) that supplies its own exact divergence
gives the same trace as autograd's, to float64 round-off, and the same ODE log-density; the
wrappers between a run's network and the ODE forward it; the drift's ∇·f follows from the
network's divergence exactly for every parametrisation."""

import numpy as np
import pytest
import torch

from physdiff import ode
from physdiff.denoiser import Denoiser
from physdiff.nets import Flattened, OddNetwork, ResMLP, SpectralGaussian
from physdiff.run import _float32
from physdiff.samplers import CountingModel, GuidedModel
from physdiff.schedule import log_sigma_bar, make_schedule

L, T = 3, 100
TIMES = (0.0, 7.0, 41.25, 63.5, 98.75, 99.0)  # integer and fractional indices, both ends
RTOL = 1e-10


class _Net(torch.nn.Module):
    """A nonlinear per-example network (B, D) → (B, D) with a full Jacobian, depending on t and a
    label, in float64 (the library's networks embed t in float32)."""

    def __init__(self, dim, num_classes=0, seed=0, width=16, scale=1.0):
        super().__init__()
        self.scale = scale
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(dim, width, generator=g, dtype=torch.float64) / dim**0.5)
        self.w2 = torch.nn.Parameter(torch.randn(width, dim, generator=g, dtype=torch.float64) / width**0.5)
        self.tw = torch.nn.Parameter(torch.randn(width, generator=g, dtype=torch.float64))
        self.label = torch.nn.Parameter(torch.randn(num_classes + 1, width, generator=g, dtype=torch.float64))

    def forward(self, x, t, cond=None):
        h = x @ self.w1 + torch.sin(0.05 * t.to(x.dtype))[:, None] * self.tw
        if cond is not None:
            h = h + self.label[cond]
        return self.scale * (torch.tanh(h) @ self.w2 + 0.1 * x**3)


def _mlp(num_classes=0, seed=0, scale=1.0):
    return _Net(L * L, num_classes, seed, scale=scale)


def test_the_library_mlp_in_float32_too():
    """The library's ResMLP (float32) inside the lattice wrappers: protocol = autograd to float32
    round-off."""
    mlp = ResMLP(L * L, width=16, depth=1, time_dim=8, site_width=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every parameter at random: the output layers start at zero
        for p in mlp.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    net = OddNetwork(Flattened(mlp.eval(), (1, L, L)))
    x = _x().float()
    t = torch.full((5,), 20.5)
    _, tr = net.output_and_divergence(x, t)
    torch.testing.assert_close(tr, _autograd(net, x, t)[1], rtol=1e-5, atol=1e-5)


def _lattice_net(prediction, seed=0, scale=1.0):
    """The lattice model as build_model makes it: SpectralGaussian(OddNetwork(Flattened(MLP))).
    ``scale``: of the network part (small: a smooth flow the ODE can integrate on a few steps)."""
    sched = make_schedule("linear", T)
    net = SpectralGaussian(OddNetwork(Flattened(_mlp(seed=seed, scale=scale), (1, L, L))), (1, L, L),
                           log_sigma_bar(sched),
                           prediction).double()
    k = 2 * np.pi * np.arange(L) / L
    net.power.copy_(torch.from_numpy(1.0 / (2.0 - 0.8 * (np.cos(k)[:, None] + np.cos(k)[None, :]))))
    return net


def _x(shape=(5, 1, L, L), seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _autograd(net, x, t, cond=None):
    return ode.exact_divergence(lambda z: net(z, t, cond), x)


def _check(net, x, cond=None, rtol=RTOL, atol=1e-12):
    assert hasattr(net, "output_and_divergence")
    for tv in TIMES:
        t = torch.full((x.shape[0],), tv, dtype=x.dtype)
        out, tr = net.output_and_divergence(x, t, cond)
        want_out, want_tr = _autograd(net, x, t, cond)
        assert tr.dtype == torch.float64 and tr.shape == (x.shape[0],)
        torch.testing.assert_close(out, want_out, rtol=rtol, atol=atol)
        torch.testing.assert_close(tr, want_tr, rtol=rtol, atol=atol)
        assert float(want_tr.abs().min()) > 1e-3  # a non-trivial trace


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_spectral_gaussian_divergence_is_the_autograd_trace(prediction):
    """The Wiener part's trace Σ_k gain_k(t) plus the inner network's, at integer and fractional t."""
    _check(_lattice_net(prediction), _x())


def test_spectral_gaussian_linear_part_alone():
    """With a zero inner network the divergence is exactly Σ_k gain_k(t) (per channel)."""
    sched = make_schedule("cosine", T)

    class Zero(torch.nn.Module):
        def forward(self, x, t, cond=None):
            return torch.zeros_like(x)

    net = SpectralGaussian(Zero(), (2, L, L), log_sigma_bar(sched), "v").double()
    net.power.copy_(torch.linspace(0.5, 3.0, L * L, dtype=torch.float64).reshape(L, L))
    x = _x((4, 2, L, L))
    t = torch.tensor([0.0, 10.5, 50.0, 99.0], dtype=torch.float64)
    _, tr = net.output_and_divergence(x, t)
    torch.testing.assert_close(tr, 2 * net.gain(t).sum((-2, -1)), rtol=1e-14, atol=0)
    torch.testing.assert_close(tr, _autograd(net, x, t)[1], rtol=RTOL, atol=1e-12)


def test_odd_and_flattened_forward_the_inner_divergence():
    _check(Flattened(_mlp(), (1, L, L)), _x())
    _check(OddNetwork(Flattened(_mlp(seed=3), (1, L, L))), _x())
    _check(OddNetwork(_mlp(seed=4)), _x((6, L * L)))
    # the inner network's own protocol is used when it has one
    inner = CountingModel(_lattice_net("eps"))
    odd = OddNetwork(inner)
    odd.output_and_divergence(_x(), torch.full((5,), 3.5, dtype=torch.float64))
    assert inner.nfe == 1


def test_guidance_and_counting_wrappers_forward_it():
    net = _mlp(num_classes=3, seed=5)
    x = _x((6, L * L))
    cond = torch.tensor([0, 1, 2, 3, 0, 3])  # 3 = the "no label" token
    for w in (0.0, 1.5):
        _check(GuidedModel(net, w, null_label=3), x, cond)
    _check(GuidedModel(net, 1.5, null_label=3), x, None)
    counted = CountingModel(GuidedModel(net, 0.7, null_label=3))
    _check(counted, x, cond)
    assert counted.nfe == 2 * len(TIMES)  # one protocol call and one forward pass of the autograd check a time


def test_float32_wrapper_forwards_it():
    """run.py's float32 wrapper: the network's own divergence, run in float32 (so to float32
    round-off of the float64 autograd trace), and the same as autograd through the cast."""
    net64 = _lattice_net("v")
    counted = CountingModel(_lattice_net("v").float())
    wrapped = _float32(counted)
    x = _x()
    for tv in TIMES:
        t = torch.full((5,), tv, dtype=torch.float64)
        out, tr = wrapped.output_and_divergence(x, t)
        assert out.dtype == torch.float64 and tr.dtype == torch.float64
        torch.testing.assert_close(tr, _autograd(net64, x, t)[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tr, _autograd(wrapped, x, t)[1], rtol=1e-5, atol=1e-5)
    assert counted.nfe == 2 * len(TIMES)  # the protocol, then one forward pass of the autograd check, a time


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_drift_divergence_from_the_network_is_exact(prediction):
    """∇·f from the network's divergence through the affine conversion to ε̂ (the D terms included)
    equals autograd's trace of the whole drift f, at integer and fractional t."""
    net = _lattice_net(prediction)
    sched = make_schedule("linear", T)
    drift = ode.Drift(net, sched, prediction)
    plain = ode.Drift(lambda x, t, cond=None: net(x, t, cond), sched, prediction)  # no protocol: autograd
    x = _x()
    for tv in TIMES:
        u = drift.denoiser.log_sigma_bar(torch.tensor(tv, dtype=torch.float64))
        f, div = drift.with_divergence(u, x)
        want_f, want_div = ode.exact_divergence(lambda z, u=u: drift(u, z), x)
        torch.testing.assert_close(f, want_f, rtol=RTOL, atol=1e-12)
        torch.testing.assert_close(div, want_div, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(plain.with_divergence(u, x)[1], want_div, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_ode_log_prob_with_the_protocol_equals_with_autograd(prediction):
    net = _lattice_net(prediction, scale=0.05)
    sched = make_schedule("linear", T)
    x_T = _x((8, 1, L, L), seed=7)
    own = ode.sample_with_log_prob(net, sched, x_T, prediction=prediction, steps=6)
    auto = ode.sample_with_log_prob(lambda x, t, cond=None: net(x, t, cond), sched, x_T, prediction=prediction,
                                    steps=6)
    assert own.divergence == auto.divergence == "exact" and own.nfe == auto.nfe == 24
    assert torch.isfinite(own.log_prob).all()
    torch.testing.assert_close(own.x, auto.x, rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(own.log_prob, auto.log_prob, rtol=RTOL, atol=1e-9)
    # and the likelihood, both ways
    back = ode.log_likelihood(net, sched, own.x, prediction=prediction, steps=6)
    back_auto = ode.log_likelihood(lambda x, t, cond=None: net(x, t, cond), sched, own.x, prediction=prediction,
                                   steps=6)
    torch.testing.assert_close(back.log_prob, back_auto.log_prob, rtol=RTOL, atol=1e-9)


def test_hutchinson_never_uses_the_protocol():
    """Hutchinson stays a stochastic estimate of the drift's trace (never in an acceptance ratio):
    it does not call the network's divergence, and it differs from the exact value."""
    net = CountingModel(_lattice_net("eps", scale=0.05))
    calls = []
    net.output_and_divergence = lambda *a: calls.append(a)  # would break the ODE if called
    sched = make_schedule("linear", T)
    x_T = _x((8, 1, L, L), seed=8)
    hutch = ode.integrate(net, sched, x_T, direction="encode", log_prob=True, steps=4, divergence="hutchinson")
    assert hutch.divergence == "hutchinson(1)" and not calls
    exact = ode.integrate(_lattice_net("eps", scale=0.05), sched, x_T, direction="encode", log_prob=True, steps=4)
    assert exact.divergence == "exact" and torch.isfinite(exact.log_prob).all()
    torch.testing.assert_close(hutch.x, exact.x, rtol=1e-12, atol=1e-12)  # the same flow ...
    assert float((hutch.log_prob - exact.log_prob).abs().max()) > 1e-3  # ... a noisy log-density


def test_denoiser_reads_fractional_time_as_the_ode_does():
    """The wrapper's ᾱ(t) at fractional t is the ODE clock's: t(u(t)) = t, and ε̂, x̂₀, v̂ are
    consistent (x = α x̂₀ + σ ε̂, v = α ε̂ − σ x̂₀) for every parametrisation."""
    sched = make_schedule("cosine", T)
    x = _x((4, L * L))
    t = torch.tensor([0.0, 12.25, 50.5, 99.0], dtype=torch.float64)
    for prediction in ("eps", "x0", "v"):
        den = Denoiser(_mlp(seed=9), sched, prediction)
        torch.testing.assert_close(den.time_index(den.log_sigma_bar(t)), t, rtol=0, atol=1e-12)
        p = den(x, t)
        torch.testing.assert_close(p.alpha * p.x0 + p.sigma * p.eps, x, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(p.v, p.alpha * p.eps - p.sigma * p.x0, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(p.out, {"eps": p.eps, "x0": p.x0, "v": p.v}[prediction], rtol=1e-9, atol=1e-9)

"""The lattice network of periodic convolutions and its exact divergence with p² probes: equal to
autograd's full trace to float64 round-off at every size and through every wrapper, at a number
of network evaluations that does not grow with L, and a network less local than it declares is
caught."""

import numpy as np
import pytest
import torch

from physdiff.nets.local import LocalNet, low_mode_basis, probe_period
from physdiff.nets.symmetry import OddNetwork
from physdiff.ode import exact_divergence, network_divergence


def random_net(C, depth, seed=0, modes=0):
    torch.manual_seed(seed)
    net = LocalNet(C, channels=6, depth=depth, time_dim=8, global_width=8, modes=modes).double()
    with torch.no_grad():  # the output layer starts at zero (trace 0): give it weights
        net.out.weight.normal_(0, 0.5)
        net.out.bias.normal_(0, 0.1)
    return net


def test_probe_period():
    assert probe_period(1, 8, 8) == 2 and probe_period(2, 8, 8) == 4 and probe_period(2, 6, 6) == 3
    assert probe_period(3, 4, 4) is None  # no p in 4..3: autograd's trace instead


# (C, depth, H, W): p = 2, 3, 4, 5; square and not; the last one has no probe period (autograd's trace)
SHAPES = [(1, 1, 4, 4), (1, 1, 8, 8), (1, 3, 8, 8), (1, 3, 16, 16), (2, 2, 8, 8), (2, 3, 8, 8), (1, 2, 6, 6),
          (2, 2, 6, 12), (1, 4, 10, 10), (1, 4, 10, 15), (1, 3, 4, 4)]


@pytest.mark.parametrize("modes", [0, 1])
@pytest.mark.parametrize(("C", "depth", "H", "W"), SHAPES)
def test_probe_trace_equals_the_full_trace(C, depth, H, W, modes):
    net = random_net(C, depth, modes=modes)
    assert (probe_period(depth, H, W) is None) == ((H, W) == (4, 4) and depth == 3)
    x = torch.randn(3, C, H, W, dtype=torch.float64)
    t = torch.tensor([0.3, 17.0, 450.0], dtype=torch.float64)
    out, fast = net.output_and_divergence(x, t)
    ref_out, full = exact_divergence(lambda z: net(z, t), x)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-10)
    assert full.abs().max() > 1e-3  # a trace that is not trivially 0


def test_in_float32_within_its_round_off():
    """The network as the samplers run it (float32): the trace within float32 round-off of
    autograd's float64 trace of the same weights."""
    net = random_net(1, 3)
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    t = torch.full((4,), 200.0, dtype=torch.float64)
    _, full = exact_divergence(lambda z: net(z, t), x)
    _, fast = net.float().output_and_divergence(x.float(), t.float())
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-4)


def test_only_the_stack_as_built_takes_the_forward_mode_by_hand():
    """A subclass, an instance's own ``local`` or a changed layer goes through torch.func's
    products instead (which follow ``local``, whatever it computes)."""
    assert random_net(1, 2)._as_built()
    assert not NonLocal(1, channels=4, depth=1, time_dim=8, global_width=8)._as_built()
    net = random_net(1, 2)
    net.local = lambda x, m, t, cond=None, low=None: LocalNet.local(net, x, m, t, cond, low)
    assert not net._as_built()
    net = random_net(1, 2)
    net.out = torch.nn.Conv2d(6, 1, 3, padding=1, padding_mode="circular").double()
    assert not net._as_built()
    net.radius = 3  # the 3×3 output widens the receptive field: declared, the probes stay exact
    x, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(net.output_and_divergence(x, t)[1], exact_divergence(lambda z: net(z, t), x)[1],
                               rtol=1e-10, atol=1e-10)


def test_through_the_odd_wrapper_and_under_no_grad():
    net = OddNetwork(random_net(1, 2))
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    t = torch.full((4,), 100.0, dtype=torch.float64)
    with torch.no_grad():  # as the samplers call it
        _, fast = network_divergence(net, x, t)
    _, full = exact_divergence(lambda z: net(z, t), x)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("modes", [0, 1])
def test_the_cost_does_not_grow_with_L(monkeypatch, modes):
    """The convolutions of one divergence (primal, C·p² probes, C zero-mode tangents, C·K low-mode
    waves) are a fixed number whose output per lattice site is the same at L = 8 and at L = 32: the
    cost grows as V."""
    net = random_net(1, 3, modes=modes)
    real = torch.nn.functional.conv2d
    work = {}

    def counted(inp, weight, *a, **k):
        out = real(inp, weight, *a, **k)
        work["calls"] = work.get("calls", 0) + 1
        work["outputs"] = work.get("outputs", 0) + out.numel()
        return out

    monkeypatch.setattr(torch.nn.functional, "conv2d", counted)
    per_site = []
    for L in (8, 32):
        work.clear()
        net.output_and_divergence(torch.randn(2, 1, L, L, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
        per_site.append((work["calls"], work["outputs"] / L**2))
    assert per_site[0] == per_site[1]
    # primal: depth + output convolutions; probes: depth - 1 full ones and the last one on 1/p² of the sites
    # of each of the p² sub-lattices; zero mode: depth - 1; the low modes' waves (one batch of C·K): depth
    assert per_site[0][0] == (3 + 1) + (2 + 16) + 2 + (3 if modes else 0)


def test_the_forward_mode_by_hand_equals_torch_func():
    """The hand-written forward mode of the stack equals torch.func's vmapped products on the same
    network (the path a subclass with its own ``local`` takes), conditioned and not."""
    torch.manual_seed(1)
    for coupling_range, modes in ((None, 0), ((0.1, 0.3), 0), (None, 1), ((0.1, 0.3), 1)):
        net = LocalNet(2, channels=5, depth=2, time_dim=8, global_width=8, coupling_range=coupling_range,
                       modes=modes).double()
        with torch.no_grad():
            net.out.weight.normal_(0, 0.5)
        x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
        t = torch.tensor([3.0, 40.0, 700.0], dtype=torch.float64)
        cond = None if coupling_range is None else torch.tensor([0.1, 0.17, 0.3], dtype=torch.float64)
        p = probe_period(net.radius, 8, 8)
        with torch.no_grad():  # as output_and_divergence calls it
            by_hand = net._forward_mode(x, t, cond, p)
        generic = net._vmapped_probes(x, t, cond, p)
        torch.testing.assert_close(by_hand[0], generic[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(by_hand[1], generic[1], rtol=1e-10, atol=1e-10)


class NonLocal(LocalNet):
    """Declares radius 1 but adds the field half a lattice away: its diagonal probes are wrong."""

    def local(self, x, m, t, cond=None, low=None):
        return super().local(x, m, t, cond, low) + 0.3 * torch.roll(x, x.shape[-1] // 2, dims=-1) ** 2


def test_the_low_modes_are_an_orthonormal_basis_of_the_lowest_momenta():
    """low_mode_basis(n): (2n + 1)² − 1 orthonormal fields spanning the momenta 0 < |k|_∞ ≤ n; the
    projector P = Σ u uᵀ commutes with translations, the 90° rotation and a reflection, keeps the
    waves of those momenta and removes the zero mode and every higher momentum."""
    for n, (H, W) in ((1, (8, 8)), (2, (6, 12)), (1, (3, 3))):
        u = low_mode_basis(n, H, W).reshape(-1, H * W)
        assert u.shape[0] == (2 * n + 1) ** 2 - 1
        torch.testing.assert_close(u @ u.T, torch.eye(len(u), dtype=u.dtype), rtol=0, atol=1e-12)
        proj = u.T @ u

        def project(f, proj=proj, H=H, W=W):
            return (proj @ f.reshape(H * W)).reshape(H, W)

        f = torch.randn(H, W, dtype=torch.float64)
        torch.testing.assert_close(project(torch.roll(f, (1, 2), (0, 1))), torch.roll(project(f), (1, 2), (0, 1)))
        torch.testing.assert_close(project(torch.flip(f, [1])), torch.flip(project(f), [1]))
        if H == W:
            torch.testing.assert_close(project(torch.rot90(f)), torch.rot90(project(f)))
        i, j = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                              indexing="ij")
        for k1, k2, kept in ((0, 0, False), (n, -n, True), (0, 1, True), (n + 1, 0, False)):
            wave = torch.cos(2 * torch.pi * (k1 * i / H + k2 * j / W) + 0.3)
            if kept:
                torch.testing.assert_close(project(wave), wave)
            elif k1 == 0 or H > 2 * n + 1:  # on H <= 2n + 1 the momentum n + 1 aliases into the shell
                assert project(wave).abs().max() < 1e-12
    with pytest.raises(ValueError, match="wider than 2 sites"):
        low_mode_basis(1, 2, 8)


def test_the_low_modes_part_of_the_trace_is_needed():
    """With modes the network depends on every site through P x: the trace with P x held fixed
    (the probes and zero modes alone) is far from autograd's full trace, and the network's own
    trace, with the low modes' rank-K part, equals it on both paths."""
    net = random_net(1, 2, modes=1)
    with torch.no_grad():
        net.convs[0].weight[:, 1:] *= 30  # make the low-mode input matter
    x, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.full((2,), 5.0, dtype=torch.float64)
    _, full = exact_divergence(lambda z: net(z, t), x)
    low = net.low(x).detach()
    _, held = exact_divergence(lambda z: net.local(z, z.mean(dim=(-2, -1)), t, None, low=low), x)
    assert (held - full).abs().min() > 1e-3
    torch.testing.assert_close(net.output_and_divergence(x, t)[1], full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(net._vmapped_probes(x, t, None, 4)[1], full, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="low-mode field"):
        net.local(x, x.mean(dim=(-2, -1)), t)


def test_a_network_less_local_than_declared_is_caught():
    torch.manual_seed(0)
    net = NonLocal(1, channels=4, depth=1, time_dim=8, global_width=8).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t = torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="beyond its declared radius 1"):
        net.check_divergence(x, t)
    assert random_net(1, 2).check_divergence(x, t) < 1e-12


def test_a_local_run_samples_exactly(tmp_path, capsys):
    """model.arch = "local" on a free field at L = 4: trains, and --metropolis (the ODE with this
    divergence) gives log Z of the Gaussian integral within 4 errors."""
    import json

    from physdiff.cli import main
    from physdiff.lattice.exact import free_field_log_z

    (tmp_path / "c.toml").write_text('[model]\narch = "local"\n[model.local]\nchannels = 8\ndepth = 1\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--dataset", "phi4", "--L", "4", "--kappa", "0.15",
                 "--lam", "0", "--steps", "200", "--n-train", "512", "--timesteps", "100", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    assert 'arch = "local"' in (out / "config.toml").read_text()
    chain = tmp_path / "chain.npy"
    assert main(["sample", str(out), "--metropolis", "--n", "400", "--out", str(chain)]) == 0
    lz = json.loads(chain.with_suffix(".json").read_text())["log_z"]
    assert abs(lz["value"] - free_field_log_z(4, 0.15)) < 4 * lz["error"] + 0.01
    capsys.readouterr()


@pytest.mark.parametrize("modes", [0, 1])
def test_large_batches_are_chunked_to_the_same_numbers(monkeypatch, modes):
    """A batch whose probe activations exceed the budget is evaluated in chunks: the same
    outputs and traces as in one piece (the budget counts the low modes' waves beside the probes)."""
    import physdiff.nets.local as local

    net = random_net(1, 2, modes=modes)
    x, t = torch.randn(7, 1, 8, 8, dtype=torch.float64), torch.full((7,), 3.0, dtype=torch.float64)
    whole = net.output_and_divergence(x, t)
    calls = {"n": 0}
    real = LocalNet._output_and_divergence

    def counted(self, *a):
        calls["n"] += 1
        return real(self, *a)

    monkeypatch.setattr(LocalNet, "_output_and_divergence", counted)
    tangents = 16 + (8 if modes else 0)  # p² = 16 probes, K = 8 low-mode waves
    monkeypatch.setattr(local, "PROBE_ELEMENTS", {"cpu": 2 * tangents * 6 * 64})  # two configurations per chunk
    monkeypatch.setattr(local, "MIN_CHUNK", 1)
    parts = net.output_and_divergence(x, t)
    assert calls["n"] == 4
    torch.testing.assert_close(parts[0], whole[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(parts[1], whole[1], rtol=0, atol=1e-10)


def test_a_run_trained_at_one_size_samples_another_exactly(tmp_path, capsys):
    """A local run trained on a free field at L = 4, sampled at L = 8 (--L 8): the network carries
    over, the Gaussian part is measured again at 8, and the chain gives the L = 8 Gaussian integral's
    log Z within 4 errors; the JSON names the size. Refused in one line for a size below 4, and
    for a run whose network is not the local one."""
    import json

    from conftest import one_line_error
    from physdiff.cli import main
    from physdiff.lattice.exact import free_field_log_z
    from physdiff.run import LoadedRun

    (tmp_path / "c.toml").write_text('[model]\narch = "local"\n[model.local]\nchannels = 8\ndepth = 1\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--dataset", "phi4", "--L", "4", "--kappa", "0.15",
                 "--lam", "0", "--steps", "200", "--n-train", "512", "--timesteps", "100", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    run = LoadedRun(out, device="cpu")
    big = run.on_lattice(8, configurations=256)
    assert big.data_shape == (1, 8, 8) and big.theory.params == run.theory.params and run.data_shape == (1, 4, 4)
    assert big.model.power.shape == (8, 8) and run.model.power.shape == (4, 4)  # the run itself is unchanged
    own, moved = run.model.state_dict(), big.model.state_dict()
    assert all(torch.equal(own[k], moved[k]) for k in own if not k.endswith("power"))
    chain = tmp_path / "chain.npy"
    assert main(["sample", str(out), "--L", "8", "--spectrum-configurations", "256", "--metropolis", "--n", "400",
                 "--out", str(chain)]) == 0
    assert np.load(chain).shape == (400, 8, 8)
    report = json.loads(chain.with_suffix(".json").read_text())
    lz = report["log_z"]
    assert abs(lz["value"] - free_field_log_z(8, 0.15)) < 4 * lz["error"] + 0.02
    assert "--L 8" in report["generator"]
    assert "allowed: an integer >= 4" in one_line_error(capsys, ["sample", str(out), "--L", "3", "--n", "4", "--out",
                                                                 str(tmp_path / "x.npy")])
    assert "applies with --L" in one_line_error(capsys, ["sample", str(out), "--spectrum-configurations", "64", "--n",
                                                         "4", "--out", str(tmp_path / "x.npy")])
    assert "cannot measure a power spectrum" in one_line_error(
        capsys, ["sample", str(out), "--L", "8", "--spectrum-configurations", "8", "--n", "4", "--out",
                 str(tmp_path / "x.npy")])
    (tmp_path / "m.toml").write_text('[model]\narch = "mlp"\n')
    mlp = tmp_path / "mlp"
    assert main(["train", "--config", str(tmp_path / "m.toml"), "--dataset", "phi4", "--L", "4", "--kappa", "0.15",
                 "--lam", "0", "--steps", "5", "--n-train", "64", "--timesteps", "100", "--out", str(mlp),
                 "--device", "cpu", "--no-progress"]) == 0
    assert "only the local network" in one_line_error(capsys, ["sample", str(mlp), "--L", "8", "--n", "4", "--out",
                                                               str(tmp_path / "y.npy")])
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "y.npy").exists()

"""One model for a range of couplings (lattice/conditioning.py): the config and the command line,
the training set on the grid, the coupling as an input of the local network (its exact divergence
unchanged) and of the Gaussian part (a spectrum per coupling, interpolated), and the exact sampler
at couplings on and between the grid's, refused outside the range."""

import json

import numpy as np
import pytest
import torch

from physdiff import LoadedRun, config_from_dict
from physdiff.cli import main
from physdiff.errors import PhysdiffError
from physdiff.lattice.conditioning import Conditioning, conditioning_of
from physdiff.nets.gaussian import SpectralGaussian, lattice_power_spectrum
from physdiff.nets.local import LocalNet
from physdiff.nets.symmetry import OddNetwork
from physdiff.ode import exact_divergence, network_divergence
from physdiff.schedule import log_sigma_bar, make_schedule


def phi4(**theory):
    return config_from_dict({"data": {"dataset": "phi4"}, "theory": {"L": 8, "lam": 0.022, **theory}})


def test_a_range_in_the_theory_table():
    cfg = phi4(kappa=[0.26, 0.28])
    assert cfg.theory["kappa"] == [0.26, 0.28] and cfg.model.arch == "local"
    cond = conditioning_of(cfg)
    assert cond == Conditioning("kappa", 0.26, 0.28, 9)
    np.testing.assert_allclose(cond.grid, np.linspace(0.26, 0.28, 9))
    assert conditioning_of(phi4(kappa=0.27)) is None
    # a tiny lattice, where the default network is the MLP, still gets the network that takes a coupling
    cfg4 = config_from_dict({"data": {"dataset": "phi4"}, "theory": {"L": 4, "kappa": [0.2, 0.3]}})
    assert cfg4.model.arch == "local"


@pytest.mark.parametrize(("theory", "model", "match"), [
    ({"kappa": [0.28, 0.26]}, {}, "lo < hi"),
    ({"kappa": [0.2, 0.25, 0.3]}, {}, "lo < hi"),
    ({"kappa": [0.2, "x"]}, {}, "lo < hi"),
    ({"kappa": [0.2, 0.3], "lam": [0.0, 0.1]}, {}, "one coupling at a time"),
    ({"kappa": [-0.1, 0.3]}, {}, "theory.kappa"),
    ({"kappa": [0.2, 0.3]}, {"arch": "mlp"}, "model.arch = local"),
    ({"kappa": [0.2, 0.3]}, {"n_train": 500, "couplings": 20}, "25 configurations per coupling"),
    ({"kappa": [0.26, 0.2600001]}, {}, "below 1e-5 of the couplings"),
])
def test_a_bad_range_is_one_line(theory, model, match):
    data = {k: model.pop(k) for k in ("n_train", "couplings") if k in model}
    with pytest.raises(PhysdiffError, match=match):
        config_from_dict({"data": {"dataset": "phi4", **data}, "theory": {"L": 8, **theory}, "model": model})


def test_ising_on_its_spins_over_a_range_takes_the_local_network():
    """The spins' preset (the MLP) does not override the network a range needs."""
    cfg = config_from_dict({"data": {"dataset": "ising", "embedding": "none"}, "theory": {"L": 8, "beta": [0.3, 0.5]}})
    assert cfg.model.arch == "local"


@pytest.mark.parametrize(("value", "match"), [("0.3:0.2", "LO < HI"), ("0.2:0.3:9", "range LO:HI"),
                                               ("0.2:x", "not a number")])
def test_train_refuses_a_bad_range_on_the_command_line(tmp_path, capsys, value, match):
    assert main(["train", "--dataset", "phi4", "--kappa", value, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def conditioned_net(seed=0, depth=2):
    torch.manual_seed(seed)
    net = LocalNet(1, channels=6, depth=depth, time_dim=8, global_width=8, coupling_range=(0.2, 0.3)).double()
    with torch.no_grad():
        net.out.weight.normal_(0, 0.5)
        net.out.bias.normal_(0, 0.1)
    return net


@pytest.mark.parametrize("L", [4, 8])
def test_the_probe_trace_of_a_conditioned_network_is_exact(L):
    net = OddNetwork(conditioned_net())
    x = torch.randn(3, 1, L, L, dtype=torch.float64)
    t = torch.tensor([0.3, 17.0, 450.0], dtype=torch.float64)
    cond = torch.tensor([0.2, 0.23, 0.3], dtype=torch.float64)
    out, fast = network_divergence(net, x, t, cond)
    ref_out, full = exact_divergence(lambda z: net(z, t, cond), x)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-10)
    # the coupling is an input: another coupling, another output and trace
    other_out, other = network_divergence(net, x, t, cond + 0.05)
    assert (other_out - out).abs().max() > 1e-4 and (other - fast).abs().max() > 1e-6
    with pytest.raises(ValueError, match="give it as cond"):
        net(x, t)


def test_a_conditioned_network_in_chunks_gives_the_same_numbers(monkeypatch):
    import physdiff.nets.local as local

    net = conditioned_net()
    x, t = torch.randn(7, 1, 8, 8, dtype=torch.float64), torch.full((7,), 3.0, dtype=torch.float64)
    cond = torch.linspace(0.2, 0.3, 7, dtype=torch.float64)  # a different coupling per configuration
    whole = net.output_and_divergence(x, t, cond)
    monkeypatch.setattr(local, "PROBE_ELEMENTS", {"cpu": 2 * 16 * 6 * 64})  # two configurations per chunk
    monkeypatch.setattr(local, "MIN_CHUNK", 1)
    parts = net.output_and_divergence(x, t, cond)
    torch.testing.assert_close(parts[0], whole[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(parts[1], whole[1], rtol=0, atol=1e-10)


def test_the_gaussian_part_has_a_spectrum_per_coupling():
    """fit: the grid's spectra from the fields of each coupling; between grid points P is linear
    in the coupling, at the ends held; the trace Σ_k gain_k stays autograd's."""
    grid = np.array([0.2, 0.25, 0.3])
    sched = make_schedule("linear", 100, warn=False)
    g = SpectralGaussian(conditioned_net(), (1, 4, 4), log_sigma_bar(sched), "v", grid=grid).double()
    torch.manual_seed(1)
    x0 = torch.cat([s * torch.randn(20, 1, 4, 4, dtype=torch.float64) for s in (1.0, 2.0, 3.0)])
    labels = torch.from_numpy(np.repeat(grid, 20))
    g.fit(x0, labels)
    for k in range(3):
        torch.testing.assert_close(g.power[k], lattice_power_spectrum(x0[20 * k:20 * (k + 1)]).to(g.power))
    p = g.spectrum(torch.tensor([0.2, 0.225, 0.3, 0.35, 0.1], dtype=torch.float64), 5, torch.float64)
    torch.testing.assert_close(p[0], g.power[0])
    torch.testing.assert_close(p[1], 0.5 * (g.power[0] + g.power[1]))
    torch.testing.assert_close(p[2], g.power[2])
    torch.testing.assert_close(p[3], g.power[2])  # held at the end outside the range
    torch.testing.assert_close(p[4], g.power[0])
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    t = torch.tensor([5.0, 40.0, 90.0], dtype=torch.float64)
    cond = torch.tensor([0.21, 0.26, 0.3], dtype=torch.float64)
    _, fast = network_divergence(g, x, t, cond)
    _, full = exact_divergence(lambda z: g(z, t, cond), x)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-10)
    with pytest.raises(PhysdiffError, match="give it as cond"):
        g(x, t)


def test_the_training_set_is_the_monte_carlo_of_each_coupling():
    from physdiff.data import load_training
    from physdiff.lattice.action import Phi4
    from physdiff.lattice.data import lattice_training_set

    cfg = config_from_dict({"data": {"dataset": "phi4", "n_train": 100, "couplings": 3},
                            "theory": {"L": 4, "kappa": [0.2, 0.3], "lam": 0.022}})
    ts = load_training(cfg)
    assert ts.num_classes == 0 and ts.labels.dtype == np.float64
    values, counts = np.unique(ts.labels, return_counts=True)
    np.testing.assert_allclose(values, [0.2, 0.25, 0.3])
    assert counts.sum() == 100 and counts.max() - counts.min() <= 1
    for value, count in zip(values, counts, strict=True):
        x, _ = lattice_training_set(Phi4(float(value), 0.022), 4, int(count), cfg.data.seed)
        np.testing.assert_array_equal(ts.x[ts.labels == value], x[:count].reshape(-1, 1, 4, 4))


@pytest.fixture(scope="module")
def free_run(tmp_path_factory):
    """A free field (λ = 0) trained over κ ∈ [0.1, 0.2] on three couplings at L = 4."""
    out = tmp_path_factory.mktemp("cond") / "run"
    cfg = tmp_path_factory.mktemp("cfg") / "c.toml"
    cfg.write_text("[model.local]\nchannels = 8\ndepth = 1\n")
    assert main(["train", "--config", str(cfg), "--dataset", "phi4", "--L", "4", "--kappa", "0.1:0.2", "--lam", "0",
                 "--couplings", "3", "--steps", "200", "--n-train", "768", "--timesteps", "100", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    return out


def test_the_conditioned_run_samples_exactly_between_its_couplings(free_run, tmp_path, capsys):
    """At κ = 0.13, between the training couplings 0.1 and 0.15: the chain's target is the
    theory at 0.13 and log Z that of its Gaussian integral within 4 errors; at 0.2 too. Outside
    the range, or without a coupling, one line and status 2."""
    from physdiff.lattice.exact import free_field_log_z

    assert "kappa = [0.1, 0.2]" in (free_run / "config.toml").read_text()
    for kappa in (0.13, 0.2):
        chain = tmp_path / f"chain{kappa}.npy"
        assert main(["sample", str(free_run), "--kappa", str(kappa), "--metropolis", "--n", "300",
                     "--out", str(chain), "-q"]) == 0
        info = json.loads(chain.with_suffix(".json").read_text())
        assert info["params"]["kappa"] == kappa
        lz = info["log_z"]
        assert abs(lz["value"] - free_field_log_z(4, kappa)) < 4 * lz["error"] + 0.01, (kappa, lz)
        assert info["ess_per_sample"] > 0.5
    capsys.readouterr()
    for extra, match in ((["--kappa", "0.25"], "outside the range this run was trained on: kappa in [0.1, 0.2]"),
                         ([], "give the coupling to use, --kappa")):
        assert main(["sample", str(free_run), "--metropolis", "--n", "10", "--out", str(tmp_path / "x.npy"),
                     *extra]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1
        assert not (tmp_path / "x.npy").exists()


def test_the_network_sees_the_coupling(free_run):
    """The same x_T at two couplings: other samples; the view leaves the run as it was."""
    run = LoadedRun(free_run, device="cpu")
    assert run.coupling is None and run.theory.kappa == pytest.approx(0.15)  # the centre, for its name
    with pytest.raises(PhysdiffError, match=r"choose the coupling first, run.at"):  # no silent default
        run.sample(4, 0, sampler="ode")
    a, b = run.at(0.1), run.at(0.2)
    assert a.theory.kappa == 0.1 and b.theory.kappa == 0.2 and run.coupling is None
    xa = a.sample(64, 0, sampler="ode").samples
    xb = b.sample(64, 0, sampler="ode").samples
    # the free field's variance grows with κ: the samples at 0.2 are wider, as their training fields are
    assert xb.var() > 1.2 * xa.var()
    with pytest.raises(PhysdiffError, match="kappa in"):
        run.at(0.05)


def test_scan_uses_the_conditioned_run_at_each_point(free_run, tmp_path, capsys):
    """scan --model RUN with a conditioned run: in the range it proposes at the point's coupling,
    beyond it at the nearest end (still exact); the figure shades the trained range."""
    out = tmp_path / "scan"
    assert main(["scan", "phi4", "--L", "4", "--kappa", "0.15,0.22", "--lam", "0", "--n", "800", "--out", str(out),
                 "--model", str(free_run), "--model-n", "200", "-q"]) == 0
    res = json.loads((out / "scan.json").read_text())
    at = [p["model"]["conditioned_at"] for p in res["points"]]
    assert at == [0.15, 0.2]
    assert res["model"]["trained_at"]["kappa"] == [0.1, 0.2]
    assert (out / "scan_model.png").is_file()
    capsys.readouterr()


def test_evaluate_plot_and_encode_take_the_coupling(free_run, tmp_path, capsys):
    """evaluate and plot use a conditioned run at the coupling given; they (and encode) refuse it
    without one, outside the range, and a coupling option for a run not conditioned on it."""
    from conftest import one_line_error

    assert main(["evaluate", str(free_run), "--kappa", "0.12", "--n", "200", "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["theory"]["kappa"] == pytest.approx(0.12)
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(4, 1, 4, 4)))
    for args, match in ((["evaluate", str(free_run)], "give the coupling to use, --kappa"),
                        (["plot", str(free_run), "--kappa", "0.3"], "outside the range"),
                        (["evaluate", str(free_run), "--kappa", "0.15", "--beta", "0.4"], "conditioned on kappa"),
                        (["encode", str(free_run), "--data", str(data), "--out", str(tmp_path / "z.npy")],
                         "give the coupling to use")):
        assert match in one_line_error(capsys, args)
    assert not (tmp_path / "z.npy").exists()


def test_each_coupling_keeps_its_own_report_and_figures(free_run, capsys):
    """evaluate and plot at two couplings write two reports and two sets of figures (tagged with
    the coupling), the training loss once; physdiff still recognises them all as its own."""
    from physdiff import checkpoint as ck

    for kappa in ("0.12", "0.18"):
        assert main(["evaluate", str(free_run), "--kappa", kappa, "--n", "100", "--json", "-q"]) == 0
        assert main(["plot", str(free_run), "--kappa", kappa, "--n", "100", "--format", "pdf"]) == 0
    capsys.readouterr()
    for kappa in ("0.12", "0.18"):
        report = json.loads((free_run / f"evaluation_kappa{kappa}.json").read_text())
        assert report["theory"]["kappa"] == pytest.approx(float(kappa))
        assert (free_run / f"histograms_kappa{kappa}.pdf").is_file()
        assert (free_run / f"histograms_kappa{kappa}.csv").is_file()
    assert (free_run / "loss.pdf").is_file() and not list(free_run.glob("loss_*"))
    assert ck.foreign_entries(free_run) == []

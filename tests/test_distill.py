"""Progressive distillation (``distill.py``, ``physdiff distill``, the ``distilled`` sampler)."""

import itertools

import numpy as np
import pytest
import torch

from conftest import one_line_error
from physdiff import diffusion as dif
from physdiff.checkpoint import is_run_file
from physdiff.cli import main
from physdiff.distill import Students, check_levels, distillation_grid, read_record, student_loss, two_step_target
from physdiff.errors import PhysdiffError
from physdiff.samplers import run_sampler
from physdiff.schedule import make_schedule, respace, timestep_subsequence

FAST = ["--steps", "300", "--width", "32", "--depth", "2", "--timesteps", "100", "--batch-size", "128",
        "--n-train", "2000", "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("base", [8, 64, 256])
def test_grids_nest_and_end_where_x_T_is_drawn(base):
    sched = make_schedule("linear", 1000)
    assert distillation_grid(sched, base, base) == timestep_subsequence(1000, base, "logsnr", sched)
    n = base // 2
    while n >= 1:
        fine, coarse = distillation_grid(sched, base, 2 * n), distillation_grid(sched, base, n)
        assert len(coarse) == n and coarse[-1] == 999
        assert coarse == fine[1::2]  # g^N_j = g^{2N}_{2j}: a student's step is two of its teacher's
        n //= 2
    assert distillation_grid(sched, base, 1) == [999]
    for bad in (3, 2 * base, 0):
        with pytest.raises(PhysdiffError, match=f"not one of the base {base}'s"):
            distillation_grid(sched, base, bad)


@pytest.mark.parametrize("base,steps,message", [
    (12, [1], "power of two"), (1024, [1], "from 2 to 512"), (1, [1], "power of two"),
    (64, [3], "powers of two below the base 64"), (4, [4], r"below the base 4 \(1, 2\)"),
    (64, [64], "below the base"), (64, [], "powers of two"),
    (64, [0], "powers of two"), (64, [True], "powers of two"),
])
def test_bad_levels_are_refused(base, steps, message):
    with pytest.raises(PhysdiffError, match=message):
        check_levels(base, steps, 1000)


def _random_net(seed, dim=3):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(dim + 1, 16, generator=g, dtype=torch.float64)
    w2 = torch.randn(16, dim, generator=g, dtype=torch.float64)

    def net(x, t):
        h = torch.tanh(torch.cat([x, (t.to(x.dtype) / 1000.0)[:, None]], 1) @ w1)
        return 0.3 * h @ w2
    return net


@pytest.mark.parametrize("prediction", ["v", "x0", "eps"])
def test_the_target_makes_one_step_land_where_two_of_the_teacher_land(prediction):
    """Salimans & Ho 2022, Algorithm 2, by hand: z' and z'' from the teacher's two DDIM steps with
    ᾱ read at the grid's indices, then one DDIM step of the student with x̂₀ = x̃ from z must
    reach z'' (to float64 round-off), for a nonlinear teacher and every step j, the last included."""
    sched = make_schedule("linear", 1000)
    base, n = 16, 4
    grid2, grid1 = distillation_grid(sched, base, 2 * n), distillation_grid(sched, base, n)
    sub2, sub1 = respace(sched, grid2), respace(sched, grid1)
    net = _random_net(1)
    g = torch.Generator().manual_seed(2)
    j = torch.arange(n).repeat(5)
    z = torch.randn(len(j), 3, generator=g, dtype=torch.float64)
    target = two_step_target(sub2, sub1, net, z, j, torch.tensor(grid2), prediction)
    ab = sched.alpha_bar
    for i in range(len(j)):
        jj = int(j[i])
        x = z[i:i + 1]
        points = [grid2[2 * jj + 1], grid2[2 * jj]] + ([grid2[2 * jj - 1]] if jj > 0 else [None])
        for a, b in itertools.pairwise(points):
            out = net(x, torch.tensor([a]))
            x0, eps = dif.split_prediction(sched, out, x, torch.tensor([a]), prediction)
            x = x0 if b is None else ab[b].sqrt() * x0 + (1 - ab[b]).sqrt() * eps
        s = grid1[jj]
        eps_t = (z[i] - ab[s].sqrt() * target[i]) / (1 - ab[s]).sqrt()
        if jj == 0:
            one = target[i]
        else:
            nxt = grid1[jj - 1]
            assert nxt == points[2]
            one = ab[nxt].sqrt() * target[i] + (1 - ab[nxt]).sqrt() * eps_t
        torch.testing.assert_close(one, x[0], rtol=1e-9, atol=1e-9)


def test_the_loss_is_the_v_error():
    """‖x̂₀ − x̃‖²/σ² = ‖v̂ − ṽ‖² (Salimans & Ho 2022, sec. 4: the "SNR+1" weighting), per dimension."""
    sched = make_schedule("linear", 1000)
    sub = respace(sched, [3, 50, 400, 999])
    g = torch.Generator().manual_seed(0)
    j = torch.tensor([0, 1, 2, 3, 3, 1])
    z, out, target = (torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(3))
    alpha, sigma = sub.at("sqrt_alpha_bar", j, z), sub.at("sqrt_one_minus_alpha_bar", j, z)
    eps_target = (z - alpha * target) / sigma
    v_target = alpha * eps_target - sigma * target
    expected = ((out - v_target) ** 2).mean(1).mean()
    torch.testing.assert_close(student_loss(sub, out, z, j, target, "v"), expected)
    x0_out = alpha * z - sigma * out  # the same network output read as x0
    torch.testing.assert_close(student_loss(sub, x0_out, z, j, target, "x0"), expected)


class _LinearDenoiser(torch.nn.Module):
    """x̂₀ = w_t x, one learnable number per index, started at the exact posterior mean of data
    N(0, c²): w_t = α c²/(α² c² + σ²). Every DDIM chain of it is linear in x_T, and so is every
    target; a student of this form can match its teacher exactly."""

    def __init__(self, sched, c):
        super().__init__()
        ab = sched.alpha_bar
        self.w = torch.nn.Parameter((ab.sqrt() * c**2 / (ab * c**2 + 1 - ab)).float())

    def forward(self, x, t, cond=None):
        return self.w[t.round().long()][:, None] * x


def test_every_student_reproduces_the_first_teacher_exactly():
    """With a linear denoiser each round's student can match its teacher exactly, so every
    student, sampled on its own grid, must give the map of the first teacher (DDIM on the base
    grid) x_T -> a x_T, to 1e-3: a wrong time input of the student, a wrong grid, a student
    trained in place of its teacher (the 2-step student changed by the 1-step round) would not."""
    from physdiff.distill import distill

    sched = make_schedule("linear", 100)
    teacher = _LinearDenoiser(sched, 0.7)
    data = 0.7 * torch.randn(4096, 1, generator=torch.Generator().manual_seed(0))
    d = distill(teacher, sched, data, "x0", steps=(1, 2, 4), base=16, iterations=400, batch_size=64, lr=0.02)
    ones = torch.ones(1, 1)
    a = run_sampler("ddim", teacher, sched, ones, timesteps=distillation_grid(sched, 16, 16), prediction="x0")
    assert torch.equal(teacher.w, _LinearDenoiser(sched, 0.7).w)  # the run's network is not trained
    students = Students(d.students, d.grids, "test")
    for n in (1, 2, 4):
        got = run_sampler("distilled", students, sched, ones, steps=n, prediction="x0").samples
        torch.testing.assert_close(got, a.samples, rtol=1e-3, atol=0), n
    assert len({id(net) for net in d.students.values()}) == 3
    assert [r.steps for r in d.rounds] == [8, 4, 2, 1] and d.rounds[-1].loss_last < 1e-6
    nodistil = run_sampler("ddim", teacher, sched, ones, timesteps=d.grids[1], prediction="x0").samples
    assert abs(float(nodistil - a.samples)) > 0.05  # one plain step is far from the teacher's chain


def test_the_distilled_sampler_needs_students():
    sched = make_schedule("linear", 100)
    with pytest.raises(PhysdiffError, match="distilled students"):
        run_sampler("distilled", lambda x, t, c=None: x, sched, torch.zeros(2, 2), steps=2)
    students = Students({2: lambda x, t, c=None: torch.zeros_like(x)}, {2: [40, 99]}, "here")
    with pytest.raises(PhysdiffError, match="no student of 4 steps; it has 2"):
        run_sampler("distilled", students, sched, torch.zeros(2, 2), steps=4)
    res = run_sampler("distilled", students, sched, torch.ones(3, 2), prediction="x0")
    assert res.nfe == 2 and torch.equal(res.samples, torch.zeros(3, 2))  # x̂₀ = 0 at the last step


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "run"
    assert main(["train", "--dataset", "gaussian", "--out", str(out), *FAST]) == 0
    return out


def test_distill_command_and_its_students(run_dir, tmp_path, capsys):
    """Students of 1 and 2 steps of a small gaussian run: the one-step student spreads its samples
    as its first teacher (the run's network, DDIM on the 32 steps of the base grid) and the data
    do, where one DDIM step of the run's own network collapses them onto the mean."""
    from physdiff.run import LoadedRun

    capsys.readouterr()
    assert main(["distill", str(run_dir), "--steps", "1,2", "--base", "32", "--iterations", "200", "-q"]) == 0
    line = capsys.readouterr().out
    assert "students of 1 and 2 steps" in line and "distilled.safetensors" in line
    record, _ = read_record(run_dir)
    assert record["base"] == 32 and sorted(record["grids"]) == [1, 2] and record["grids"][1] == [99]
    assert [r["steps"] for r in record["rounds"]] == [16, 8, 4, 2, 1]
    assert all(r["loss_last"] < r["loss_first"] for r in record["rounds"])
    assert record["teacher"]["weights"] == "ema" and record["teacher"]["step"] == 300
    assert len(record["teacher"]["sha256"]) == 64
    for n, grid in record["grids"].items():
        assert grid == distillation_grid(make_schedule("linear", 100), 32, n)
    assert is_run_file("distilled.safetensors")
    run = LoadedRun(run_dir, device="cpu")
    data = run.kind.toy(run.cfg.data).sample(20_000, 0)
    one = run.sample(4000, 1, sampler="distilled", steps=1)
    assert one.nfe == 1 and one.sampler == "distilled"
    two = run.sample(4000, 1, sampler="distilled", steps=2)
    assert two.nfe == 2 and not np.array_equal(two.samples, one.samples)
    assert np.all(np.abs(two.samples.std(0) / data.std(0) - 1) < 0.2)
    ddim = run.sample(4000, 1, sampler="ddim", steps=1)
    teacher = run.sample(4000, 1, sampler="ddim", timesteps=distillation_grid(run.schedule, 32, 32))
    spread, data_spread = one.samples.std(0), data.std(0)
    assert np.all(np.abs(spread / teacher.samples.std(0) - 1) < 0.12), (spread, teacher.samples.std(0))
    assert np.all(np.abs(spread / data_spread - 1) < 0.2), (spread, data_spread)
    assert np.all(ddim.samples.std(0) < 0.2 * data_spread)
    np.testing.assert_allclose(one.samples.mean(0), data.mean(0), atol=0.15 * data_spread.max())
    # the same through the command line, bit for bit
    out = tmp_path / "s.npy"
    assert main(["sample", str(run_dir), "--sampler", "distilled", "--steps", "1", "--n", "4000", "--seed", "1",
                 "--out", str(out), "-q"]) == 0
    np.testing.assert_array_equal(np.load(out), one.samples)
    # the other weights are another teacher
    with pytest.raises(PhysdiffError, match="distilled from the ema weights of step 300"):
        LoadedRun(run_dir, weights="model", device="cpu").sample(10, 0, sampler="distilled")


def test_distill_refusals(run_dir, tmp_path, capsys):
    one_line_error(capsys, ["distill", str(run_dir), "--steps", "3"])
    one_line_error(capsys, ["distill", str(run_dir), "--base", "100"])
    one_line_error(capsys, ["distill", str(run_dir), "--lr", "0"])
    from physdiff.distill import distill_run
    from physdiff.run import LoadedRun

    run = LoadedRun(run_dir, device="cpu")
    for bad_setting in ({"lr": -1.0}, {"iterations": 0}, {"batch_size": 0}, {"lr": True}, {"batch_size": 2**20 + 1}):
        with pytest.raises(PhysdiffError, match="not allowed"):  # refused before the data are made
            distill_run(run, (1,), base=4, **bad_setting)
    one_line_error(capsys, ["distill", str(tmp_path / "none")])
    # a corrupt students file: refused when sampled and before any distillation work, and kept
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(run_dir, bad)
    (bad / "distilled.safetensors").write_bytes(b"not a safetensors file")
    msg = one_line_error(capsys, ["sample", str(bad), "--sampler", "distilled", "--n", "5", "--out",
                                  str(tmp_path / "x.npy")])
    assert "distilled" in msg and not (tmp_path / "x.npy").exists()
    msg = one_line_error(capsys, ["distill", str(bad), "--base", "4", "--steps", "1,2", "--iterations", "5"])
    assert "corrupt" in msg and (bad / "distilled.safetensors").read_bytes() == b"not a safetensors file"
    # a run without students
    (bad / "distilled.safetensors").unlink()
    msg = one_line_error(capsys, ["sample", str(bad), "--sampler", "distilled", "--n", "5", "--out",
                                  str(tmp_path / "x.npy")])
    assert "physdiff distill" in msg


def test_an_eps_run_is_refused(tmp_path, capsys):
    out, cfg = tmp_path / "eps", tmp_path / "eps.toml"
    cfg.write_text('[diffusion]\nprediction = "eps"\n')
    assert main(["train", "--dataset", "gaussian", "--out", str(out), "--steps", "10", *FAST[2:],
                 "--config", str(cfg)]) == 0
    msg = one_line_error(capsys, ["distill", str(out), "--base", "4", "--steps", "1", "--iterations", "5"])
    assert "predicts v or x0" in msg and not (out / "distilled.safetensors").exists()


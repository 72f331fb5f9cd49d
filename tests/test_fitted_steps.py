"""Explicit and fitted visited timesteps (``timesteps`` option, ``fitted_steps.py``, ``fit-steps``)."""

import json

import numpy as np
import pytest
import torch

from conftest import one_line_error
from physdiff.analytic import GaussianMixture, OptimalEpsilon
from physdiff.checkpoint import is_run_file
from physdiff.cli import main
from physdiff.errors import PhysdiffError
from physdiff.fitted_steps import fit_timesteps
from physdiff.samplers import check_timesteps, run_sampler
from physdiff.schedule import make_schedule, timestep_subsequence

FAST = ["--steps", "200", "--width", "32", "--depth", "2", "--timesteps", "100", "--batch-size", "128",
        "--n-train", "2000", "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("sampler,options", [
    ("ddim", {"steps": 7}), ("ddpm", {"steps": 7}), ("dpm-solver", {"steps": 7}),
    ("dpm-solver", {"steps": 7, "order": 3}), ("unipc", {"steps": 7}), ("sde-dpm-solver", {"steps": 7}),
])
def test_explicit_timesteps_are_the_spacing_they_name(gaussian_2d, sampler, options):
    """The indices of a spacing, given as ``timesteps``, give the same samples bit for bit."""
    sched = make_schedule("linear", 1000)
    model = OptimalEpsilon(gaussian_2d, sched)
    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    taus = timestep_subsequence(1000, 7, "logsnr", sched)
    a = run_sampler(sampler, model, sched, x_T, spacing="logsnr", generator=torch.Generator().manual_seed(1),
                    **options).samples
    b = run_sampler(sampler, model, sched, x_T, timesteps=taus[::-1], generator=torch.Generator().manual_seed(1),
                    **options).samples
    assert torch.equal(a, b)
    c = run_sampler(sampler, model, sched, x_T, timesteps=[0, 5, 30, 100, 300, 600, 999],
                    generator=torch.Generator().manual_seed(1), **options).samples
    assert not torch.equal(a, c)  # and other indices are used, not ignored


@pytest.mark.parametrize("taus,steps,message", [
    ([0, 5, 998], None, "largest T-1"),
    ([0, 5, 5, 999], None, "distinct"),
    ([-1, 5, 999], None, "distinct"),
    ([0, 5.5, 999], None, "integer"),
    ("abc", None, "integer"),
    ([0, 5, 999], 4, "3 timesteps were given"),
])
def test_bad_timesteps_are_refused(taus, steps, message):
    with pytest.raises(PhysdiffError, match=message):
        check_timesteps(taus, 1000, steps)
    sched = make_schedule("linear", 1000)
    with pytest.raises(PhysdiffError):
        run_sampler("unipc", lambda x, t, c=None: x, sched, torch.zeros(2, 2), timesteps=taus,
                    **({} if steps is None else {"steps": steps}))


def test_timesteps_and_spacing_together_are_refused():
    sched = make_schedule("linear", 100)
    with pytest.raises(PhysdiffError, match="either timesteps or spacing"):
        run_sampler("ddim", lambda x, t, c=None: x, sched, torch.zeros(2, 2), timesteps=[0, 99], spacing="logsnr")


def _mixture_solver(mix, sched, sampler="unipc", **options):
    model = OptimalEpsilon(mix, sched)

    def solve(x_T, taus):
        return run_sampler(sampler, model, sched, x_T, timesteps=taus, **options).samples

    return solve


def test_fitted_steps_cut_the_global_error_of_an_exact_mixture():
    """With the exact denoiser of two narrow Gaussians (no network error), the fitted 8 steps of
    UniPC have a smaller global error against the converged solve than logSNR-uniform ones, on x_T
    they were not fitted to; they are 8 distinct indices ending at T-1."""
    sched = make_schedule("linear", 1000)
    mix = GaussianMixture([[-2.0, 0.0], [2.0, 0.5]], [np.eye(2) * 0.05, np.diag([0.02, 0.3])])
    g = torch.Generator().manual_seed(3)
    x_fit, x_check = (torch.randn(512, 2, generator=g, dtype=torch.float64) for _ in range(2))
    fit = fit_timesteps(_mixture_solver(mix, sched), sched, 8, x_fit, x_check)
    assert fit.kept and len(fit.timesteps) == 8 == len(set(fit.timesteps))
    assert fit.timesteps == sorted(fit.timesteps) and fit.timesteps[-1] == 999 and fit.timesteps[0] >= 0
    assert fit.start == timestep_subsequence(1000, 8, "logsnr", sched)
    assert fit.error_fitted < 0.5 * fit.error_start, fit  # measured: about 10x smaller
    # the check is an honest one: recomputed here on the held-out draw
    ref = _mixture_solver(mix, sched)(x_check, timestep_subsequence(1000, 200, "logsnr", sched))
    err = float(((_mixture_solver(mix, sched)(x_check, fit.timesteps) - ref) ** 2).sum(1).mean())
    assert err == pytest.approx(fit.error_fitted, rel=1e-12)


def test_fitted_steps_keep_the_law_of_gaussian_data(gaussian_2d):
    """Fitted on the exact Gaussian denoiser, 10 UniPC steps draw the right law (mean and
    covariance to 4 standard errors on 20 000 samples, with a 0.01 allowance) and a smaller
    covariance error than logSNR-uniform steps."""
    sched = make_schedule("linear", 1000)
    solve = _mixture_solver(gaussian_2d, sched)
    g = torch.Generator().manual_seed(5)
    x_fit, x_check = (torch.randn(1024, 2, generator=g, dtype=torch.float64) for _ in range(2))
    fit = fit_timesteps(solve, sched, 10, x_fit, x_check)
    x_T = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x = solve(x_T, fit.timesteps).numpy()
    m, C = gaussian_2d.means[0].numpy(), gaussian_2d.covs[0].numpy()
    n = len(x)
    assert np.all(np.abs(x.mean(0) - m) <= 4 * np.sqrt(np.diag(C) / n) + 0.01)
    se = np.sqrt((C**2 + np.outer(np.diag(C), np.diag(C))) / n)
    cov_err = np.abs(np.cov(x, rowvar=False) - C)
    assert np.all(cov_err <= 4 * se + 0.01)
    start_err = np.abs(np.cov(solve(x_T, fit.start).numpy(), rowvar=False) - C)
    assert cov_err.max() < start_err.max(), (cov_err.max(), start_err.max())


def test_a_fit_that_does_not_hold_on_fresh_draws_is_not_kept():
    """The search lowers the error on its own draw; when that does not carry over to the held-out
    draw, the start is kept and the entry says so."""
    sched = make_schedule("linear", 100)
    start = timestep_subsequence(100, 5, "logsnr", sched)
    x_fit, x_check = torch.zeros(4, 1), torch.ones(4, 1)

    def solve(x_T, taus):  # the reference is x_T; any move helps on the fit draw and hurts on the check draw
        if len(taus) != 5:
            return x_T
        if list(taus) == start:
            return x_T + 0.5  # error 0.25 on both draws
        return x_T + (x_T != 0).to(x_T.dtype)  # error 0 on the fit draw (zeros), 1 on the check draw (ones)

    fit = fit_timesteps(solve, sched, 5, x_fit, x_check)
    assert fit.error_fit_draw == 0.0  # the search moved
    assert not fit.kept and fit.timesteps == fit.start == start
    assert fit.error_fitted == 1.0 and fit.error_start == 0.25  # both reported on the held-out draw


def test_fit_steps_needs_fewer_steps_than_its_reference():
    sched = make_schedule("linear", 50)
    with pytest.raises(PhysdiffError, match="3 <= steps < 50"):
        fit_timesteps(lambda x, t: x, sched, 50, torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(PhysdiffError, match="3 <= steps"):
        fit_timesteps(lambda x, t: x, sched, 2, torch.zeros(2, 1), torch.zeros(2, 1))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "run"
    assert main(["train", "--dataset", "two_gaussians", "--out", str(out), *FAST]) == 0
    return out


def test_fit_steps_command_and_its_use(run_dir, tmp_path, capsys):
    from physdiff.run import LoadedRun

    capsys.readouterr()
    assert main(["fit-steps", str(run_dir), "--steps", "6", "--n", "256", "-q"]) == 0
    line = capsys.readouterr().out
    assert "fitted 6 timesteps for unipc" in line and "timesteps.json" in line
    fits = json.loads((run_dir / "timesteps.json").read_text())["fits"]
    (entry,) = fits.values()
    assert entry["options"] == {"steps": 6, "order": 2, "variant": "bh2"} and entry["n"] == 256
    assert entry["context"]["weights"] == "ema" and entry["reference"]["steps"] == 100
    run = LoadedRun(run_dir, device="cpu")
    taus = entry["timesteps"]
    assert entry["kept"] and run.fitted_timesteps("unipc", {"steps": 6}) == taus
    # used when no spacing is given; --spacing logsnr and other options are not affected
    fitted = run.sample(200, 1, sampler="unipc", steps=6)
    assert fitted.options["timesteps"] == taus
    explicit = run.sample(200, 1, sampler="unipc", steps=6, timesteps=taus)
    np.testing.assert_array_equal(fitted.samples, explicit.samples)
    logsnr = run.sample(200, 1, sampler="unipc", steps=6, spacing="logsnr")
    assert "timesteps" not in logsnr.options and not np.array_equal(logsnr.samples, fitted.samples)
    assert "timesteps" not in run.sample(50, 1, sampler="unipc", steps=7).options
    assert "timesteps" not in run.sample(50, 1, sampler="unipc", steps=6, order=3).options
    out = tmp_path / "s.npy"
    assert main(["sample", str(run_dir), "--sampler", "unipc", "--steps", "6", "--n", "200", "--seed", "1",
                 "--out", str(out), "-q"]) == 0
    assert "on the run's fitted timesteps" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out), fitted.samples)
    # the model weights are another network: the EMA's fit is not theirs
    assert LoadedRun(run_dir, weights="model", device="cpu").fitted_timesteps("unipc", {"steps": 6}) is None
    assert is_run_file("timesteps.json")


@pytest.mark.parametrize("argv,words", [
    (["--sampler", "unipc", "--steps", "7", "--spacing", "fitted"], "fit-steps"),
    (["--sampler", "ddpm", "--spacing", "fitted"], "deterministic samplers"),
    (["--sampler", "ddim", "--steps", "3", "--timesteps", "0,5,98"], "largest T-1"),
    (["--sampler", "ddim", "--steps", "4", "--timesteps", "0,5,99"], "3 timesteps were given"),
    (["--sampler", "ddim", "--timesteps", "0,x,99"], "comma-separated"),
])
def test_sample_refuses_bad_fitted_or_explicit_timesteps(run_dir, tmp_path, capsys, argv, words):
    out = tmp_path / "s.npy"
    message = one_line_error(capsys, ["sample", str(run_dir), "--n", "10", "--out", str(out), *argv])
    assert words in message and not out.exists()


@pytest.mark.parametrize("argv,words", [
    (["--steps", "2"], "3 <= steps"),
    (["--steps", "100"], "3 <= steps < 100"),
    (["--sampler", "ddpm"], "invalid choice"),
    (["--n", "10"], "64..1000000"),
    (["--order", "5"], "order"),
])
def test_fit_steps_refuses_bad_options(run_dir, capsys, argv, words):
    before = (run_dir / "timesteps.json").read_bytes() if (run_dir / "timesteps.json").exists() else None
    assert words in one_line_error(capsys, ["fit-steps", str(run_dir), "-q", *argv])
    after = (run_dir / "timesteps.json").read_bytes() if (run_dir / "timesteps.json").exists() else None
    assert before == after


def test_a_fit_not_kept_is_not_used_and_named(run_dir, tmp_path, capsys):
    import shutil

    from physdiff.run import LoadedRun

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    data = json.loads((copy / "timesteps.json").read_text())
    for entry in data["fits"].values():
        entry["kept"] = False
    (copy / "timesteps.json").write_text(json.dumps(data))
    assert "timesteps" not in LoadedRun(copy, device="cpu").sample(20, 1, sampler="unipc", steps=6).options
    message = one_line_error(capsys, ["sample", str(copy), "--sampler", "unipc", "--steps", "6", "--spacing",
                                      "fitted", "--n", "10", "--out", str(tmp_path / "s.npy")])
    assert "none were kept" in message and "--spacing logsnr" in message


def test_a_corrupt_timesteps_file_is_named(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "timesteps.json").write_text("{not json")
    message = one_line_error(capsys, ["sample", str(copy), "--sampler", "unipc", "--steps", "6", "--n", "10",
                                      "--out", str(tmp_path / "s.npy")])
    assert "timesteps.json" in message and "fit-steps" in message
    # train --overwrite removes it with the rest of the run: a new network has no fits
    assert main(["train", "--dataset", "two_gaussians", "--out", str(copy), "--overwrite", *FAST]) == 0
    assert not (copy / "timesteps.json").exists()


def test_one_fit_steps_at_a_time_and_a_corrupt_file_refused_first(run_dir, tmp_path, capsys):
    import shutil

    from physdiff.checkpoint import OutputLock

    with OutputLock(run_dir / "timesteps.json"):
        message = one_line_error(capsys, ["fit-steps", str(run_dir), "--steps", "5", "--n", "64", "-q"])
    assert "being written by another physdiff process" in message
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "timesteps.json").write_text("[]")
    assert "timesteps.json" in one_line_error(capsys, ["fit-steps", str(copy), "--steps", "5", "--n", "64", "-q"])
    assert (copy / "timesteps.json").read_text() == "[]" and not (copy / ".timesteps.lock").exists()


@pytest.mark.parametrize("sampler,options,resolved", [
    ("unipc", {"steps": 10}, {"steps": 10, "order": 2, "variant": "bh2"}),
    ("unipc", {"steps": 20}, {"steps": 20, "order": 3, "variant": "bh2"}),  # the sampler's own rule: 3 from 15
    ("unipc", {}, {"steps": 20, "order": 3, "variant": "bh2"}),
    ("unipc", {"steps": 20, "order": 2, "variant": "bh1"}, {"steps": 20, "order": 2, "variant": "bh1"}),
    ("dpm-solver", {"steps": 10}, {"steps": 10, "order": 2}),
    ("dpm-solver", {"steps": 10, "order": 3}, {"steps": 10, "order": 3, "variant": "reference"}),
    ("ddim", {"steps": 10}, {"steps": 10}),
    ("ddim", {"steps": 10, "eta": 0.5}, None), ("ddim", {}, None), ("ddpm", {"steps": 10}, None),
    ("sde-dpm-solver", {"steps": 10}, None), ("ode", {}, None),
])
def test_a_fit_is_keyed_by_the_options_the_sampler_will_use(sampler, options, resolved):
    """The key of a fit fills in each sampler's defaults as the sampler itself does (unipc's order
    from its step count), so a fit is found exactly when the same solver would run."""
    from physdiff.fitted_steps import resolved_options
    from physdiff.samplers import unipc_default_order

    assert resolved_options(sampler, options) == resolved
    assert [unipc_default_order(k) for k in (14, 15)] == [2, 3]


def test_fewer_hops_fewer_runs(run_dir, capsys):
    """--hops sets the restarts of the search: none is the first pattern search alone, which the
    default's six restarts can only improve on the draw fitted to; more than 100 is refused."""
    from physdiff.fitted_steps import fit_key, fit_steps, read_fits
    from physdiff.run import LoadedRun

    run = LoadedRun(run_dir, device="cpu")
    none = fit_steps(run, "unipc", 5, n=128, hops=0)
    six = fit_steps(run, "unipc", 5, n=128)
    assert none.evaluations < six.evaluations and six.error_fit_draw <= none.error_fit_draw
    entry = read_fits(run_dir)[fit_key("unipc", {"steps": 5, "order": 2, "variant": "bh2"}, run.fit_context(None))]
    assert entry["evaluations"] == six.evaluations and entry["hops"] == 6
    one_line_error(capsys, ["fit-steps", str(run_dir), "--steps", "5", "--hops", "101"])
    one_line_error(capsys, ["fit-steps", str(run_dir), "--steps", "5", "--hops", "-1"])

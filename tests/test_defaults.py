"""Defaults under which every advertised sampler is good: v-prediction, far outliers never silent."""

import warnings

import numpy as np
import pytest

from physdiff import Config, LoadedRun, train
from physdiff.evaluation import vectors
from physdiff.run import OutlierWarning


@pytest.fixture(scope="module")
def spiral_run(tmp_path_factory):
    """The default spiral run at a quarter of the default training budget."""
    cfg = Config().with_overrides({"data.dataset": "spiral", "train.steps": 1500, "train.device": "cpu"})
    return LoadedRun(train(cfg, tmp_path_factory.mktemp("defaults") / "spiral", progress=False))


@pytest.mark.parametrize("sampler,steps", [("dpm-solver", 20), ("unipc", 20), ("sde-dpm-solver", 20), ("ddim", 50),
                                           ("ode", None)])
def test_fast_samplers_throw_no_far_outliers(spiral_run, sampler, steps):
    """With ε-prediction (the old default) about 2 in 1000 samples of these samplers landed at
    |x| ≈ 30 (the spiral lies within 1.3): x̂₀ = (x − σ ε̂)/√ᾱ amplifies the network's error at
    t = T by 1/√ᾱ_T ≈ 160. v-prediction gives x̂₀ = √ᾱ x − σ v̂, with no amplification."""
    assert spiral_run.cfg.diffusion.prediction == "v"
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutlierWarning)
        x = spiral_run.sample(5000, 0, sampler=sampler, steps=steps).samples
    radius = np.sqrt((x**2).sum(1))
    assert radius.max() < 3.0, radius.max()


def test_far_outliers_are_reported_and_warned(spiral_run, monkeypatch):
    x = np.random.default_rng(0).normal(size=(1000, 2))
    x[:7] = 40.0
    assert vectors.outlier_share(x, np.random.default_rng(1).normal(size=(1000, 2))) == pytest.approx(0.007)
    report = vectors.evaluate(spiral_run, 2000, 0, np.concatenate([x[:7], np.zeros((1993, 2))]))
    row = report["metrics"]["outlier_share"]
    assert row["value"] == pytest.approx(7 / 2000) and row["floor"] == 0.0
    assert "far outliers: 0.35% of samples" in vectors.format_report(report)
    # sampling warns once when a batch lands far outside the training range
    monkeypatch.setattr(spiral_run, "data_range", [-0.01, 0.01])
    monkeypatch.setattr(spiral_run, "_warned_outliers", False)
    with pytest.warns(OutlierWarning, match="samples from ddpm lie more than 1 data widths outside"):
        spiral_run.sample(100, 0, sampler="ddpm", steps=20)

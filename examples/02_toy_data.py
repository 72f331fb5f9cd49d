# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Two Gaussians and the spiral: schedules, parametrisations, and how to read a distance
#
# We train small models and read every distance beside its **noise floor**: the same distance
# between two independent true sets of the same size. A perfect model reaches the floor, not zero;
# a ratio value/floor near 1 means "indistinguishable from the data at this sample size".
# `PHYSDIFF_FAST=1` trains for a few hundred steps (the test suite); the default, 3000 steps per model
# (half of `physdiff train`'s), runs the whole notebook in about 4 minutes on 2 CPU cores.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

import physdiff
from physdiff.data import toy_for
from physdiff.evaluation import evaluate

FAST = os.environ.get("PHYSDIFF_FAST") == "1"
STEPS, N = (300, 500) if FAST else (3000, 3000)
work = Path(tempfile.mkdtemp())


def fit(dataset, **overrides):
    cfg = physdiff.config_from_dict({"data": {"dataset": dataset}},
                                    {"train.steps": STEPS, "train.device": "cpu", **overrides})
    name = dataset + "".join(f"_{v}" for v in overrides.values())
    return physdiff.LoadedRun(physdiff.train(cfg, work / name, progress=False))


def ratio_table(run, **sampler):
    report = evaluate(run, N, seed=0, sampler_args=sampler)
    return {k: v["value"] / v["floor"] for k, v in report["metrics"].items()
            if k in ("sliced_wasserstein", "mean_error", "cov_error")}


# %% [markdown]
# ## Two Gaussians: ε- against v-prediction
# The network can predict the noise ε, the clean data x₀ or the velocity
# $v = \sqrt{\bar\alpha}\,\varepsilon - \sqrt{1-\bar\alpha}\,x_0$; all three define the same ideal
# denoiser, but the regression problems differ in how they weight the timesteps.

# %%
runs = {pred: fit("two_gaussians", **{"diffusion.prediction": pred}) for pred in ("eps", "v")}
for pred, run in runs.items():
    print(pred, {k: round(v, 2) for k, v in ratio_table(run).items()}, "(value / noise floor)")

# %%
truth = toy_for(runs["v"].cfg.data).sample(N, 123)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), sharex=True, sharey=True, layout="constrained")
axes[0].scatter(*truth.T, s=2, alpha=0.4)
axes[0].set_title("data")
for ax, (pred, run) in zip(axes[1:], runs.items(), strict=True):
    x = run.sample(N, seed=1).samples
    ax.scatter(*x.T, s=2, alpha=0.4, color="C1")
    ax.set_title(f"{pred}-prediction, DDPM 1000 steps")
for ax in axes:
    ax.set(xlabel="$x_1$", ylabel="$x_2$")
fig.suptitle("Two Gaussians")
plt.show()

# %% [markdown]
# ## The spiral: linear against cosine schedule
# The schedule decides how fast the signal is destroyed. Below: $\sqrt{\bar\alpha_t}$ of both, and the
# distance of each trained model to its noise floor.

# %%
sched_runs = {s: fit("spiral", **{"diffusion.schedule": s}) for s in ("linear", "cosine")}
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
for s, run in sched_runs.items():
    ax0.plot(run.schedule.sqrt_alpha_bar.numpy(), label=s)
    x = run.sample(N, seed=1).samples
    ax1.scatter(*x.T, s=2, alpha=0.4, label=s)
    print(s, {k: round(v, 2) for k, v in ratio_table(run).items()}, "(value / noise floor)")
ax0.set(xlabel="timestep t", ylabel=r"$\sqrt{\bar\alpha_t}$", title="Signal left")
ax1.set(xlabel="$x_1$", ylabel="$x_2$", title="Spiral samples")
ax0.legend()
ax1.legend(markerscale=5)
plt.show()

# %% [markdown]
# ## Reading the numbers
# A ratio near 1 is the best any model can show at this n; 2 means "twice the sampling noise of the
# data itself". With few training steps (the fast mode) the ratios are larger: train longer, not
# tweak the sampler. The floor shrinks as $1/\sqrt n$, so always compare at the same n.

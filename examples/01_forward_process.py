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
# # 1. The forward process, its closed form, the exact denoiser and the loss
#
# A DDPM destroys data by T small Gaussian steps
# $q(x_t|x_{t-1}) = \mathcal N(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)$ and learns to undo them.
# Three equations carry everything:
#
# 1. the closed form $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$,
#    $\bar\alpha_t = \prod_{s\le t}(1-\beta_s)$;
# 2. the reverse model $p_\theta(x_{t-1}|x_t) = \mathcal N(\mu_\theta(x_t,t), \sigma_t^2 I)$ with a
#    fixed variance;
# 3. the loss $\mathbb E\,\|\varepsilon - \varepsilon_\theta(x_t, t)\|^2$.
#
# On Gaussian data everything is known exactly, so we check each claim with numbers, not pictures.
# `PHYSDIFF_FAST=1` runs this notebook with smaller sample sizes (the test suite does).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from physdiff import diffusion as dif
from physdiff.analytic import GaussianMixture, OptimalEpsilon
from physdiff.samplers import run_sampler
from physdiff.schedule import make_schedule

FAST = os.environ.get("PHYSDIFF_FAST") == "1"
N = 4_000 if FAST else 50_000
torch.manual_seed(0)
sched = make_schedule("linear", 1000)

# %% [markdown]
# ## The closed form is the T-step chain
# Run the chain step by step from 1D data $x_0 \sim \mathcal N(\mu=2, s^2=0.25)$ and compare the
# mean and variance at each t with the closed form: $\sqrt{\bar\alpha_t}\mu$ and
# $\bar\alpha_t s^2 + 1 - \bar\alpha_t$.

# %%
mu, s2 = 2.0, 0.25
x = mu + s2**0.5 * torch.randn(N, 1, dtype=torch.float64)
means, variances = [], []
for t in range(sched.T):
    x = dif.q_step_sample(sched, x, torch.full((N,), t), torch.randn_like(x))
    means.append(x.mean().item())
    variances.append(x.var().item())
ab = sched.alpha_bar.numpy()
theory_mean, theory_var = np.sqrt(ab) * mu, ab * s2 + 1 - ab
err = max(np.abs(np.array(means) - theory_mean).max() / np.sqrt(theory_var.max() / N),
          np.abs(np.array(variances) - theory_var).max() / (theory_var.max() * np.sqrt(2 / N)))
print(f"largest deviation from the closed form: {err:.1f} standard errors")
assert err < 5

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(means, label="mean, chain")
ax.plot(theory_mean, "k--", lw=1, label=r"$\sqrt{\bar\alpha_t}\,\mu$")
ax.plot(variances, label="variance, chain")
ax.plot(theory_var, "k:", lw=1, label=r"$\bar\alpha_t s^2 + 1-\bar\alpha_t$")
ax.set(xlabel="timestep t", ylabel="value", title="Forward chain against its closed form")
ax.legend()
plt.show()

# %% [markdown]
# ## The exact denoiser
# For Gaussian (mixture) data the marginal $p_t$ is known, so the best possible network is known too:
# $\varepsilon^*(x_t,t) = -\sqrt{1-\bar\alpha_t}\,\nabla\log p_t(x_t)$. Its loss is not zero: the
# loss has an irreducible part, the variance of ε given $x_t$. For 1D Gaussian data it is
# $\bar\alpha_t s^2/(\bar\alpha_t s^2 + 1 - \bar\alpha_t)$ per dimension.

# %%
mix = GaussianMixture([[mu]], [[[s2]]])
eps_star = OptimalEpsilon(mix, sched)
ts = np.array([10, 100, 300, 600, 900])
x0 = torch.from_numpy(mix.sample(N, np.random.default_rng(1)))
rows = []
for t in ts:
    tt = torch.full((N,), int(t))
    noise = torch.randn_like(x0)
    xt = dif.q_sample(sched, x0, tt, noise)
    loss = ((noise - eps_star(xt, tt)) ** 2).mean().item()
    exact = ab[t] * s2 / (ab[t] * s2 + 1 - ab[t])
    rows.append((t, loss, exact))
    print(f"t = {t:4d}: loss of ε* {loss:.4f}, irreducible {exact:.4f}")
    assert abs(loss - exact) < 6 * exact * np.sqrt(2 / N)

# %% [markdown]
# ## The course's μ-matching loss is a weighted ε loss
# The KL terms of the bound compare means: $\frac{1}{2\sigma_t^2}\|\tilde\mu_t - \mu_\theta\|^2
# = w_t\|\varepsilon - \varepsilon_\theta\|^2$ with
# $w_t = \beta_t^2 / (2\sigma_t^2\alpha_t(1-\bar\alpha_t))$. With $\sigma_t^2 = \beta_t$ the weight
# is almost flat except at small t, which is why the unweighted "simple" ε loss of Ho et al. works
# so well.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for variance in ("beta", "beta_tilde"):
    ax.semilogy(dif.mu_loss_weight(sched, variance).numpy(), label=fr"$\sigma_t^2$ = {variance}")
ax.set(xlabel="timestep t", ylabel=r"$w_t$", title=r"Weight of $\|\varepsilon-\varepsilon_\theta\|^2$ in the μ loss")
ax.legend()
plt.show()

# %% [markdown]
# ## Sampling with the exact denoiser reproduces the data
# Ancestral sampling (1000 steps; 200 in the fast mode) and DPM-Solver++ (20 steps) from
# $x_T \sim \mathcal N(0, 1)$ with ε*: the mean and variance of the samples match μ = 2 and
# s² = 0.25 within their errors.

# %%
x_T = torch.randn(N, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
for name, opts in (("ddpm", {"steps": 200} if FAST else {}), ("dpm-solver", {"steps": 20})):
    out = run_sampler(name, eps_star, sched, x_T, generator=torch.Generator().manual_seed(3), **opts).samples
    m, v = out.mean().item(), out.var().item()
    print(f"{name:10s}: mean {m:.4f} (2 ± {np.sqrt(s2 / N):.4f}), variance {v:.4f} (0.25 ± {s2 * np.sqrt(2 / N):.4f})")
    assert abs(m - mu) < 5 * np.sqrt(s2 / N) + 0.01 and abs(v - s2) < 5 * s2 * np.sqrt(2 / N) + 0.01
fig, ax = plt.subplots(figsize=(6, 3.5))
grid = np.linspace(0, 4, 200)
ax.hist(out.numpy().ravel(), bins=80, density=True, alpha=0.6, label="DPM-Solver++ (20 steps), exact ε*")
ax.plot(grid, np.exp(-((grid - mu) ** 2) / (2 * s2)) / np.sqrt(2 * np.pi * s2), "k", label="data density")
ax.set(xlabel="x", ylabel="density", title="Samples of the exact denoiser")
ax.legend()
plt.show()

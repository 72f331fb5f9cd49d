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
# # 5. φ⁴ and Ising: diffusion against Monte Carlo, made exact by Metropolis
#
# Real scalar φ⁴ on an L×L periodic lattice, $S(\phi) = \sum_x[-2\kappa\sum_\mu \phi_x\phi_{x+\hat\mu}
# + (1-2\lambda)\phi_x^2 + \lambda\phi_x^4]$, sampled with $e^{-S}$. The workflow:
#
# 1. a reference Monte Carlo (HMC + Wolff cluster updates), checked for thermalisation;
# 2. a diffusion model trained on Monte Carlo configurations. Its network has two parts: the exact
#    denoiser of a Gaussian field with the data's power spectrum (linear, diagonal in momentum space)
#    and a learnt rest — at L ≥ 8 the local network of periodic convolutions (`nets/local.py`), whose
#    exact divergence costs the same number of passes at every L, on the tiny lattice of the fast mode
#    an MLP on the whole field with a small network shared by every site; the whole is odd, so
#    q(φ) = q(−φ) exactly;
# 3. samples **with their exact log-density** log q from the probability-flow ODE;
# 4. an independence Metropolis–Hastings chain accepting with $e^{-S}/q$: exact whatever the model's
#    errors, which only cost acceptance. Every observable with a Γ-method error, every comparison as z.
#
# The fast mode (`PHYSDIFF_FAST=1`) uses L = 4 and a short training; the default is the L = 8 point
# near the critical coupling (about 20 minutes on 2 cores, most of it the local network's training).

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import physdiff
from physdiff.lattice import exact_sampler as es
from physdiff.lattice.action import Phi4
from physdiff.lattice.mc import run_mcmc
from physdiff.lattice.observables import SCALARS, as_table, compare, measure, primaries

FAST = os.environ.get("PHYSDIFF_FAST") == "1"
L, KAPPA, LAM = (4, 0.25, 0.022) if FAST else (8, 0.2705, 0.022)
STEPS, N, N_REF, N_TRAIN = (400, 1000, 2000, 4000) if FAST else (6000, 2000, 4000, 10_000)
theory = Phi4(KAPPA, LAM)

# %% [markdown]
# ## Reference Monte Carlo
# Burn-in and spacing come from the measured integrated autocorrelation time; hot and cold starts
# must agree.

# %%
ref, report = run_mcmc(theory, L, N_REF, seed=1, chains=16)
print({k: report[k] for k in ("hmc_acceptance", "hmc_step", "pilot_tau_int_abs_m_sweeps", "burn_in_sweeps",
                              "spacing_sweeps")})
print("hot/cold agreement:", report["thermalisation"])
ref_t = as_table(measure(ref, theory, chains=16))

# %% [markdown]
# ## Train, sample with log q, correct

# %%
cfg = physdiff.config_from_dict({"data": {"dataset": "phi4", "L": L, "kappa": KAPPA, "lam": LAM,
                                          "n_train": N_TRAIN}},
                                {"train.steps": STEPS, "train.device": "cpu"})
run = physdiff.LoadedRun(physdiff.train(cfg, Path(tempfile.mkdtemp()) / "phi4", progress=False))
exact = es.sample_exact(run, N, seed=7, theory=theory, chain_seed=0)  # ODE proposals + log q → action → Metropolis
x, chain, info = exact.proposals.astype(np.float64), exact.chain.astype(np.float64), exact.report
print(f"acceptance {info['acceptance']:.2f}, ESS/N {info['ess_per_sample']:.2f} ± {info['ess_per_sample_error']:.2f}")
lz = info["log_z"]  # from the same weights: Z = E_q[e^{-S}/q], lattice units
print(f"log Z = {lz['value']:.3f} ± {lz['error']:.3f}, f = -log Z / V = {info['free_energy_density']['value']:.5f}")

# %%
raw_t, mh_t = as_table(measure(x, theory)), as_table(measure(chain, theory))
z_raw, z_mh = compare(raw_t, ref_t), compare(mh_t, ref_t)
print(f"{'observable':16s} {'Monte Carlo':>18s} {'diffusion raw':>18s} {'z':>6s} {'+ Metropolis':>18s} {'z':>6s}")
for k in SCALARS:
    r, w, m = ref_t[k], raw_t[k], mh_t[k]
    print(f"{k:16s} {r['value']:10.4f} ± {r['error']:.4f} {w['value']:10.4f} ± {w['error']:.4f} {z_raw[k]:+6.1f} "
          f"{m['value']:10.4f} ± {m['error']:.4f} {z_mh[k]:+6.1f}")
assert abs(z_mh["action_density"]) < 4  # exact up to statistics

# %% [markdown]
# ## Figures: magnetisation, action, and the model's density against the action
# For a perfect model $-\log q = S + \text{const}$: the points lie on a line of slope 1, and the log
# weights $\log w = -S - \log q$ are all equal. Their spread is what Metropolis pays in acceptance.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
sets = {"Monte Carlo": ref[:N], "diffusion (raw)": x, "diffusion + Metropolis": chain}
for label, cfgs in sets.items():
    p = primaries(cfgs, theory)
    axes[0].hist(p["m"], bins=50, density=True, histtype="step", label=label)
    axes[1].hist(p["s"], bins=50, density=True, histtype="step", label=label)
axes[0].set(xlabel="magnetisation M", ylabel="density", title="M: both peaks, φ → −φ symmetric")
axes[1].set(xlabel="action density S/V", ylabel="density", title="Action density")
axes[0].legend(fontsize=8)
action = exact.action
axes[2].scatter(action, -exact.log_q, s=2, alpha=0.4)
lo, hi = np.percentile(action, [1, 99])
shift = np.median(-exact.log_q - action)
axes[2].plot([lo, hi], [lo + shift, hi + shift], "k--", lw=1, label="slope 1")
axes[2].set(xlabel="action S", ylabel="−log q", title="Model density against the action")
axes[2].legend()
fig.suptitle(f"φ⁴, L = {L}, κ = {KAPPA}, λ = {LAM}")
plt.show()

# %% [markdown]
# ## Ising
# `physdiff train --dataset ising --beta 0.44` trains on the Hubbard–Stratonovich variable x of Wolff
# configurations (an exact draw x | s ~ N(Ws, W), W = βJ + (4β + 1)I), whose density is known:
# p(x) ∝ exp(−½ xᵀW⁻¹x) Π 2cosh x. `sample_exact` runs the same chain on x against that density and
# draws the spins back exactly (P(s = +1) = σ(2x)); its log Z is Kaufman's up to statistics
# (README, "Ising, exact"; benchmarks/README.md has the numbers).

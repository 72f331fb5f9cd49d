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
# # 4. Class-conditional digits with classifier-free guidance
#
# scikit-learn's 8×8 digits (1797 images, no download). One U-Net learns both $\varepsilon(x_t, t, k)$
# and, with the label dropped 10% of the time, $\varepsilon(x_t, t, \varnothing)$. Guidance mixes them,
# $\tilde\varepsilon = (1+w)\,\varepsilon(x_t,t,k) - w\,\varepsilon(x_t,t,\varnothing)$
# (Ho & Salimans 2022): larger w gives more recognisable digits and less variety. We measure both:
# a classifier's accuracy on the asked class, the Fréchet distance to held-out digits beside its
# floor (training digits against held-out ones, at the same n: the floor falls with n), and the
# recall (Kynkäänniemi et al. 2019), the share of held-out digits that the samples' manifold
# covers: the variety that guidance trades away.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

import physdiff
from physdiff.evaluation import evaluate
from physdiff.plots import tile_images

FAST = os.environ.get("PHYSDIFF_FAST") == "1"
# N = None: as many samples as training digits (1438), the n of the FCD's floor
STEPS, N, SAMPLE_STEPS = (150, 200, 20) if FAST else (3000, None, 50)
cfg = physdiff.config_from_dict({"data": {"dataset": "digits"}}, {"train.steps": STEPS, "train.device": "cpu"})
run = physdiff.LoadedRun(physdiff.train(cfg, Path(tempfile.mkdtemp()) / "digits", progress=False))
print(run.class_names, run.data_shape)

# %% [markdown]
# ## Samples per class, three guidance strengths

# %%
# "compressed", not "constrained": fixed-aspect image panels, no empty band under the title
fig, axes = plt.subplots(1, 3, figsize=(12, 2.6), layout="compressed")
for ax, w in zip(axes, (0.0, 0.5, 2.0), strict=True):
    x = run.sample(40, seed=0, classes=list(range(10)) * 4, guidance=w, sampler="ddpm", steps=SAMPLE_STEPS).samples
    ax.imshow(tile_images(x, nrow=10), cmap="gray_r", vmin=0, vmax=1)
    ax.set(title=f"guidance w = {w}", xticks=[], yticks=[], xlabel="class 0 … 9 (columns)")
fig.suptitle("Class-conditional samples (DDPM)")
plt.show()

# %% [markdown]
# ## Accuracy and distance against guidance

# %%
for w in (0.0, 2.0):
    report = evaluate(run, N, seed=0, sampler_args={"guidance": w, "sampler": "ddpm", "steps": SAMPLE_STEPS},
                      log=lambda *a: None)
    m = report["metrics"]
    print(f"w = {w}: conditional accuracy {m['conditional_accuracy']['value']:.2f} "
          f"(classifier on test digits {m['conditional_accuracy']['floor']:.2f}), "
          f"FCD {m['fcd']['value']:.2f} (floor {m['fcd']['floor']:.2f}), "
          f"recall {m['recall']['value']:.2f} (floor {m['recall']['floor']:.2f}), n = {report['n']}")

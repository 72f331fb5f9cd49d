"""The training objective as a small object: ``loss(net, x0, labels, generator) -> (B,)``.

It draws the timestep and the noise, applies label dropout and an optional augmentation
(random symmetry transforms of x₀), noises by the closed form q(x_t|x₀) (Ho et al. 2020,
eq. 4) and returns one loss per example (``diffusion.training_loss``: L_simple, eq. 14, or
the course's μ loss, eq. 8). The training loop keeps the optimiser, EMA, logging and
checkpoints; this file holds the formula.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import diffusion as dif
from .schedule import Schedule

# augment(x0, generator) -> x0': a random transform drawn from ``generator`` under which the
# data law is invariant (lattice translations, x → −x, ...). None: no augmentation.
Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class DenoisingLoss:
    """Per-example denoising loss of a network predicting ``prediction`` (eps, x0, v).

    ``label_dropout``: share of labels replaced by ``null_label`` (classifier-free guidance,
    Ho & Salimans 2022); with ``null_label`` None the labels are never dropped (the couplings of a
    coupling-conditioned lattice run, float). ``shard``: (lo, hi) rows of the global batch this process keeps; every
    draw is made for the whole batch first, so W data-parallel processes compute what one does.
    ``amp_dtype``: autocast dtype of the forward pass (None: full precision).
    """

    sched: Schedule
    prediction: str = "eps"
    loss: str = "simple"
    variance: str = "beta"
    label_dropout: float = 0.0
    null_label: int | None = None
    augment: Augmentation | None = None
    amp_dtype: torch.dtype | None = None

    def __call__(self, net, x0: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator,
                 shard: tuple[int, int] | None = None) -> torch.Tensor:
        """x0: (B, *data_shape) global batch in network units; labels: (B,) or None. Returns
        the losses of the rows in ``shard`` (all rows by default), float32, shape (hi - lo,)."""
        B, device = x0.shape[0], x0.device
        lo, hi = shard or (0, B)
        t = torch.randint(self.sched.T, (B,), generator=generator, device=device)
        noise = torch.randn(x0.shape, generator=generator, device=device)
        cond = None
        if labels is not None and self.null_label is not None:  # one model, conditional and not
            drop = torch.rand((B,), generator=generator, device=device)
            cond = torch.where(drop < self.label_dropout, self.null_label, labels)[lo:hi]
        elif labels is not None:  # no null label: always conditioned (a coupling-conditioned lattice run)
            cond = labels[lo:hi]
        if self.augment is not None:
            x0 = self.augment(x0, generator)
        x0, t, noise = x0[lo:hi], t[lo:hi], noise[lo:hi]
        xt = dif.q_sample(self.sched, x0, t, noise)
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = net(xt, t, cond)
        return dif.training_loss(self.sched, out.float(), x0, xt, t, noise, prediction=self.prediction,
                                 loss=self.loss, variance=self.variance)

"""A lattice theory of your own, for the command line: φ⁶ in the hopping form,

    S = Σ_x [−2κ Σ_μ φ_x φ_{x+μ̂} + φ_x² + g φ_x⁶],

registered under the name "phi6". Any physdiff command that reads theories loads it with
``--theory-file examples/phi6.py``; its parameters become options (``--kappa``, ``--g``):

    physdiff mcmc phi6 --theory-file examples/phi6.py --L 8 --kappa 0.15 --g 0.1 --n 4000 --out phi6.npy
    physdiff train --theory-file examples/phi6.py --dataset phi6 --L 8 --kappa 0.15 --g 0.1 --out runs/phi6
    physdiff sample runs/phi6 --theory-file examples/phi6.py --metropolis --n 1000 --out chain.npy
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from physdiff.lattice import Theory, param, register_theory


@register_theory
@dataclass(frozen=True)
class Phi6(Theory):
    """S = Σ_x [−2κ Σ_μ φ_x φ_{x+μ̂} + φ_x² + g φ_x⁶]: Z₂ symmetric, normalisable for g > 0."""

    name: ClassVar[str] = "phi6"
    title: ClassVar[str] = "φ⁶"
    kappa: float = param(0.15, doc="phi6: hopping parameter κ", symbol="κ")
    g: float = param(0.1, lo=0.0, lo_open=True, doc="phi6: sextic coupling g (> 0)", symbol="g")

    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S(φ) per configuration: (B, L, L) → (B,)."""
        hop = phi * (torch.roll(phi, -1, -1) + torch.roll(phi, -1, -2))
        return (-2 * self.kappa * hop + phi**2 + self.g * phi**6).sum((-2, -1))

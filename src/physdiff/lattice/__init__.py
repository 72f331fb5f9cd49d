"""Lattice field theory: the theory contract and its registry (``theory.py``) with φ⁴ and Ising
as implementations (``action.py``) and 2D U(1) gauge theory (``u1.py``), reference Monte Carlo
(HMC + Wolff, Wolff), exact results, observables with Γ-method errors, ensembles on disk, and the
exact sampler built from a diffusion model's density (Metropolis–Hastings, importance weights)."""

from .action import Ising, Phi4, free_field_propagator
from .mc import run_mcmc
from .theory import THEORIES, Theory, get_theory, make_theory, param, register_theory, theory_from_params
from .u1 import U1

__all__ = ["THEORIES", "U1", "Ising", "Phi4", "Theory", "free_field_propagator", "get_theory", "make_theory",
           "param", "register_theory", "run_mcmc", "theory_from_params"]

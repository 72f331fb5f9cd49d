"""Lattice field theory: actions (φ⁴, Ising), reference Monte Carlo (HMC + Wolff, Wolff),
exact results, observables with Γ-method errors, ensembles on disk, and the exact sampler
built from a diffusion model's density (Metropolis–Hastings, importance weights)."""

from .action import Ising, Phi4, free_field_propagator
from .mc import run_mcmc

__all__ = ["Ising", "Phi4", "free_field_propagator", "run_mcmc"]

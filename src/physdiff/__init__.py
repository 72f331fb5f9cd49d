"""physdiff: denoising diffusion probabilistic models for physicists, checked against theory.

The package is built in layers. A module imports only from its own layer or those below it,
function-level imports included, and no import cycle exists even inside a layer;
``tests/test_layers.py`` reads this table and checks every import of ``src/physdiff`` against
it. A name ending in ``.*`` covers a package's modules; a module named exactly wins over it.

    layer 0 base: physdiff errors seeding stats progress devices dist provenance checkpoint plots
    layer 1 physics: lattice lattice.* lattice.u1
    layer 2 diffusion: schedule denoiser diffusion objective ode likelihood samplers nets nets.* analytic metrics
    layer 3 data: data data.*
    layer 4 config: config
    layer 5 runs: run training distill fitted_steps lattice.exact_sampler lattice.scan lattice.free_energy
    layer 6 outputs: sampling evaluation evaluation.* classifier demo
    layer 7 face: arguments options cli __main__

- **base**: errors, seeds, statistics (Γ-method), progress, devices and processes, provenance
  (with the version), array and run-directory I/O (atomic writes, locks, output files), figures.
- **physics**: the ``Theory`` contract and its registry, φ⁴, Ising and 2D U(1) gauge theory, Monte
  Carlo, embeddings, observables, exact closed forms, ensembles and exports; it knows nothing of
  diffusion.
- **diffusion**: the maths: schedules, the Gaussian process, the parametrisation adapter, the
  loss, the probability-flow ODE and its divergence, samplers (a registry that knows none of its
  plug-ins: distillation registers its own), networks.
- **data**: data kinds as strategies (toy, file, image, lattice), loading and normalisation; no
  evaluation.
- **config**: typed configuration, TOML in and out, validation.
- **runs**: a trained run loaded and sampled (``LoadedRun``: it keeps no job), and the jobs that
  take a run or make one: training, fitted timesteps, distillation, the exact sampler, scans.
- **outputs**: samples written to files, evaluation (its own registry keyed by data kind), the demo.
- **face**: the command line; nothing imports it.
"""

from importlib import import_module

from .errors import PhysdiffError

__version__ = "0.1.0"
__all__ = ["Config", "LoadedRun", "PhysdiffError", "Schedule", "config_from_dict", "load_config", "make_schedule",
           "train"]

# the public names, imported on first use: `import physdiff` (and so `physdiff --help`) loads no torch
_LAZY = {"Config": "config", "config_from_dict": "config", "load_config": "config", "LoadedRun": "run",
         "Schedule": "schedule", "make_schedule": "schedule", "train": "training"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

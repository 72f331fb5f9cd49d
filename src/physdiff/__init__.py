"""physdiff: denoising diffusion probabilistic models for physicists, checked against theory."""

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

"""The device a job runs on: ``auto`` resolved to a GPU when there is one."""

from __future__ import annotations

import torch

from .errors import PhysdiffError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda if available, else cpu. ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PhysdiffError("device cuda was asked for but no CUDA GPU is available; use device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise PhysdiffError(f"unknown device {name!r}; allowed: auto, cpu, cuda")
    return torch.device(name)

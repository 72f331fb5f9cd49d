"""Multi-process helpers for runs launched by ``torchrun`` (PyTorch's launcher): process-group
set-up (gloo on CPU, NCCL on GPUs), the rank's share of a range, gathering results on rank 0.

Outside torchrun (no WORLD_SIZE in the environment, or 1) everything is a no-op, so the same
code path serves one process and many.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def group_size() -> int:
    """Processes in the joined group (1 when none was joined)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> tuple[torch.device, bool]:
    """Join the process group if launched by torchrun with several processes. Returns the
    device this rank uses (cuda:LOCAL_RANK on GPUs) and whether a group was created here."""
    if world_size() <= 1 or dist.is_initialized():
        return device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, True


def finish(created: bool) -> None:
    if created and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard(n: int) -> tuple[int, int]:
    """[lo, hi) of this rank's contiguous share of range(n) (sizes differ by at most one)."""
    w, r = group_size(), rank()
    return r * n // w, (r + 1) * n // w


def gather_rows(array: np.ndarray) -> np.ndarray | None:
    """Concatenate every rank's rows in rank order on rank 0 (None on the other ranks)."""
    if not dist.is_initialized():
        return array
    parts = [None] * group_size() if is_main() else None
    dist.gather_object(array, parts, dst=0)
    return np.concatenate(parts) if is_main() else None


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= group_size()
    return t

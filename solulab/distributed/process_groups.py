"""Process groups under ``torchrun``: the device, the ``(dp, tp)`` mesh, and the collectives.

One process (no ``torchrun``) is world size 1 and needs no process group. Under ``torchrun`` the
backend is NCCL on CUDA and gloo on CPU, and the processes form a ``(dp, tp)`` mesh: ranks that
share a data-parallel index hold one model split by tensor parallelism and see the same data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from solulab.errors import SolulabError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    tp: int = 1  # tensor-parallel degree
    mesh: Any = None  # DeviceMesh with dims ("dp", "tp") when distributed

    @property
    def dp_size(self) -> int:
        return self.world_size // self.tp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.tp

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    """``name`` as a device this machine has, or a SolulabError saying what it has."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SolulabError(f"unknown device {name!r}: use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SolulabError(f"--device {name}: this machine has no CUDA GPU (PyTorch "
                           f"{torch.__version__}); use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SolulabError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type not in ("cpu", "cuda"):
        raise SolulabError(f"--device {name}: solulab runs on cpu or cuda")
    return dev


def collective_timeout() -> timedelta:
    """How long a collective may wait for the other ranks before it fails with an error
    (``SOLULAB_DIST_TIMEOUT_S``, default 600 s) instead of hanging."""
    seconds = os.environ.get("SOLULAB_DIST_TIMEOUT_S", "600")
    try:
        return timedelta(seconds=float(seconds))
    except ValueError:
        raise SolulabError(f"SOLULAB_DIST_TIMEOUT_S must be a number, got {seconds!r}") from None


def init_distributed(device: str | None = None, tp: int = 1) -> DistInfo:
    """Join the ``torchrun`` process group if there is one; pick the device; build the mesh."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if tp < 1 or world_size % tp:
        raise SolulabError(f"--tp {tp} does not divide the {world_size} processes")
    mesh = None
    if world_size > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                    timeout=collective_timeout())
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(dev.type, (world_size // tp, tp), mesh_dim_names=("dp", "tp"))
    return DistInfo(rank, world_size, local_rank, dev, tp, mesh)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (identity in one process)."""
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()

"""Data-parallel helpers: run the trainers under ``torchrun --nproc_per_node=N`` (DDP).

    dist = init_distributed("auto")        # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun
    model = wrap_ddp(model, dist)          # DistributedDataParallel when world_size > 1
    lo, hi = shard(global_batch, dist)     # this rank's slice of the global batch
    n = all_reduce_sum(local_count, dist)  # e.g. the global number of loss tokens
    cleanup(dist)

gloo on CPU, nccl on CUDA. Without torchrun (no WORLD_SIZE), everything is a single process and
these helpers are no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available")
    return torch.device(device)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for one process).

    On CUDA each rank takes GPU ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return DistInfo(device=dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not tdist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        tdist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev)


def cleanup(info: DistInfo) -> None:
    if info.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def shard(n: int, info: DistInfo) -> tuple[int, int]:
    """[lo, hi) of this rank's contiguous share of ``n`` global items (a ValueError if n % world)."""
    if n % info.world_size:
        raise ValueError(f"global batch of {n} does not split evenly over {info.world_size} ranks")
    per = n // info.world_size
    return info.rank * per, (info.rank + 1) * per


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``x`` over ranks (``x`` itself for one process); returns a new tensor."""
    x = x.detach().clone()
    if info.enabled:
        tdist.all_reduce(x, op=tdist.ReduceOp.SUM)
    return x


def barrier(info: DistInfo) -> None:
    if info.enabled:
        tdist.barrier()


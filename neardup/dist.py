"""Every torch.distributed call neardup makes lives here.

Launchers: ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR set) or
SLURM's ``srun`` (SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID; MASTER_ADDR and
MASTER_PORT must be exported by the job script). Backend: NCCL on GPUs, gloo on
CPU. A plain single process never initialises anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank and world size from torchrun's or SLURM's environment (single process otherwise)."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env and int(env["SLURM_NTASKS"]) > 1 and "MASTER_ADDR" in env:
        return DistInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistInfo()


def init(device: str | None = None) -> DistInfo:
    """Join the process group if launched distributed; pins each rank to its GPU for NCCL."""
    info = env_info()
    if not info.enabled or dist.is_initialized():
        return info
    if torch.cuda.is_available() and not str(device or "auto").startswith("cpu"):
        torch.cuda.set_device(info.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    os.environ.setdefault("RANK", str(info.rank))
    os.environ.setdefault("WORLD_SIZE", str(info.world_size))
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from ``src`` to every rank (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average these parameters' gradients over the ranks (what DDP does for the model's), in place.

    Why: a loss's own parameters (class proxies) live outside the DDP model; averaging keeps them identical
    on every rank. A no-op when not distributed.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)

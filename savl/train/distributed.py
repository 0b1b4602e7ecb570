"""Process-group set-up for `torchrun`: gloo on CPU, NCCL on GPU, rank-0 side effects only.

Launched without torchrun (no WORLD_SIZE in the environment) everything degrades to a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from savl.errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_mean(self, tensors) -> None:
        """Average tensors (e.g. gradients of a module outside DDP) across ranks, in place."""
        if not self.enabled:
            return
        for t in tensors:
            if t is not None:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
                t.div_(self.world)

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's boolean on every rank (e.g. 'a loss went non-finite somewhere')."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; a CUDA device that is not there is a one-line ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a torch device (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: CUDA is not available here (use device=cpu)")
    return dev


def backend_for(device: torch.device) -> str:
    """The process-group backend for a training device: NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def setup(device_name: str) -> DistInfo:
    """Read torchrun's environment, check the world fits the devices, initialise the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device_name)
    if world <= 1:
        return DistInfo(device=dev)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        if local_world > n:
            raise ConfigError(
                f"torchrun started {local_world} processes on this node but it has {n} CUDA device(s); "
                f"use --nproc_per_node={n}"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(dev))
        owns = True
    if dist.get_world_size() != world:
        raise ConfigError(f"WORLD_SIZE {world} does not match the process group ({dist.get_world_size()})")
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=dev, owns_group=owns)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()

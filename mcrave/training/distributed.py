"""Data-parallel plumbing for `torchrun` (gloo on CPU, nccl on CUDA).

Gradients are averaged by one flat all_reduce per optimiser step instead of wrapping the model in
DistributedDataParallel: phase 2 freezes the encoder mid-run (which DDP's static graph dislikes),
and the flat reduce keeps every rank bit-identical, which the exact-resume guarantee relies on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes (checkpoints, logs, metrics)."""
        return self.rank == 0

    def shard(self, batch: int) -> slice:
        """This rank's rows of a global batch of `batch * world` items (disjoint across ranks)."""
        return slice(self.rank * batch, (self.rank + 1) * batch)


def init_from_env(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment; a plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average .grad over ranks. A parameter without a gradient on one rank counts as zero there
    (e.g. the spatial stage when a rank's rows all have every channel present), so every rank
    reduces the same tensor."""
    if info.world <= 1 or not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= info.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def agree(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a small float vector over ranks (stop flags, losses for logging); identity alone."""
    if info.world > 1:
        dist.all_reduce(values)
    return values


def shutdown(info: DistInfo) -> None:
    if info.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

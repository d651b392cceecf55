"""Collectives used by the contrastive loss: all-gather that keeps the gradient of the local slice.

Rank and world size are explicit arguments (no global lookups), so the functions are tested on
one CPU process with a monkeypatched `all_gather` and used unchanged under torchrun/accelerate.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def gather_with_grad(x: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """`[n, ...]` per process -> `[world_size * n, ...]` in rank order; the gradient flows to this
    rank's own slice only. Every process must pass the same n."""
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts, dim=0)


def gather_no_grad(x: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)

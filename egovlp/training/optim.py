"""AdamW with its parameter groups and the warm-up cosine schedule every trainer uses."""

from __future__ import annotations

import math

import torch
from torch import nn

# modules whose weights are scales or lookup tables, not projections: never decayed
_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# parameters a module registers itself (pos_embed, temporal_embed, cls_token, query_embed ...)
_NO_DECAY_SUFFIXES = ("embed", "embedding", "token", "tokens")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed projections, and undecayed norms, biases and embeddings.

    A parameter is not decayed when it has fewer than 2 dimensions (biases, norm scales), belongs to
    an embedding or norm module, or is a module's own embedding table or token (its name ends in
    `embed` / `token`). A conv or linear that happens to sit under a `*_embed` module (the patch
    projection) is a projection and is decayed.
    """
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:  # tied weights are grouped once
                continue
            seen.add(id(p))
            embedding_like = isinstance(module, _NO_DECAY_MODULES) or name.endswith(_NO_DECAY_SUFFIXES)
            (no_decay if p.ndim < 2 or embedding_like else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over `parameter_groups`."""
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr)


def warmup_cosine_factor(step: int, warmup: int, total: int) -> float:
    """The lr multiplier after `step` optimizer steps: linear from 0 over `warmup` steps, then a cosine
    from 1 down to 0 at `total` (and 0 after it)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of `warmup_cosine_factor`, stepped once per optimizer step by the trainer."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup, total)
    )

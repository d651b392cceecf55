"""ActionFormer-style moment detector: per-set projections -> local-attention transformer pyramid ->
shared classification and regression heads on every pyramid point.

Feature sets [B, T, C1], [B, T, C2], ... are each projected by a small MLP and concatenated, then fused
to `hidden`. The stem runs local (windowed) self-attention at stride 1; each further pyramid level halves
the sequence (max-pool) and runs another local-attention block. Every point of every level predicts
per-class logits and (left, right) distances to the action boundaries, in units of its level's stride.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from pydantic.dataclasses import dataclass
from torch import nn

from heads.common import HEAD_CONFIG, Fraction, HeadConfig, InputNorm


@dataclass(config=HEAD_CONFIG)
class MQConfig(HeadConfig):
    levels: PositiveInt = 4  # pyramid strides 1, 2, 4, 8
    window: PositiveInt = 9  # local attention sees +-window//2 points at every level
    stem_layers: NonNegativeInt = 1
    head_layers: NonNegativeInt = 2
    max_len: PositiveInt = 256  # training crops longer clips to this many rows (inference reads whole clips)
    # each level regresses actions whose larger boundary distance (in rows) lies in its range
    regression_ranges: tuple[tuple[NonNegativeFloat, PositiveFloat], ...] = (
        (0, 4),
        (4, 8),
        (8, 16),
        (16, 100000),
    )
    center_radius: PositiveFloat = 1.5  # center sampling radius, in strides
    focal_alpha: Fraction = 0.25
    focal_gamma: NonNegativeFloat = 2.0
    reg_weight: NonNegativeFloat = 1.0
    asl: bool = False  # action-sensitivity (class-aware Gaussian) weights on both losses
    label_smoothing: Fraction = 0.0
    # training (defaults other than the shared ones)
    epochs: PositiveInt = 60
    batch_size: PositiveInt = 8
    weight_decay: NonNegativeFloat = 0.05
    # inference
    pre_nms_threshold: Fraction = 0.001
    pre_nms_topk: PositiveInt = 2000
    soft_nms_sigma: PositiveFloat = 0.5
    max_segments: PositiveInt = 100

    @classmethod
    def consistency(cls, name: str, value: Any, earlier: dict[str, Any]) -> str | None:
        if name == "regression_ranges" and len(value) != earlier.get("levels", len(value)):
            return f"{len(value)} ranges for {earlier['levels']} levels (one per pyramid level)"
        return super().consistency(name, value, earlier)


class LocalAttentionBlock(nn.Module):
    """Pre-norm transformer block whose attention is limited to a local window (a banded mask)."""

    def __init__(self, dim: int, heads: int, window: int, dropout: float):
        super().__init__()
        self.window = window
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        idx = torch.arange(T, device=x.device)
        far = (idx[:, None] - idx[None, :]).abs() > self.window // 2  # (T, T) True = not attended
        y = self.norm1(x)
        y, _ = self.attn(y, y, y, attn_mask=far, key_padding_mask=~mask, need_weights=False)
        x = x + self.drop(y)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x.masked_fill(~mask[..., None], 0.0)  # (B, T, D), padding kept at zero


class Scale(nn.Module):
    """A learnable scalar per pyramid level for the regression output (FCOS / ActionFormer)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class MomentDetector(nn.Module):
    """forward(feats [B, T, sum(C_i)], mask [B, T]) -> per level: cls [B, T_l, K], reg [B, T_l, 2], mask."""

    def __init__(self, cfg: MQConfig, set_dims: list[int], num_classes: int):
        super().__init__()
        self.cfg, self.set_dims, self.num_classes = cfg, list(set_dims), num_classes
        h = cfg.hidden
        self.input_norm = InputNorm(sum(set_dims))
        self.project = nn.ModuleList(
            nn.Sequential(nn.Linear(c, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(cfg.dropout))
            for c in set_dims
        )
        self.fuse = nn.Sequential(nn.Linear(h * len(set_dims), h), nn.LayerNorm(h))
        self.embed = nn.Conv1d(h, h, 3, padding=1)
        self.stem = nn.ModuleList(
            LocalAttentionBlock(h, cfg.num_heads, cfg.window, cfg.dropout) for _ in range(cfg.stem_layers)
        )
        self.branch = nn.ModuleList(
            LocalAttentionBlock(h, cfg.num_heads, cfg.window, cfg.dropout) for _ in range(cfg.levels - 1)
        )
        self.cls_tower = self._tower(h, cfg.head_layers)
        self.reg_tower = self._tower(h, cfg.head_layers)
        self.cls_out = nn.Conv1d(h, num_classes, 3, padding=1)
        self.reg_out = nn.Conv1d(h, 2, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in range(cfg.levels))
        # prior of 1% foreground so the focal loss starts stable (RetinaNet init)
        nn.init.constant_(self.cls_out.bias, -4.595)
        if cfg.asl:
            # class-aware Gaussian sensitivity over the relative position inside an action, per sub-task
            self.asl_mu = nn.Parameter(torch.full((2, num_classes), 0.5))
            self.asl_log_sigma = nn.Parameter(torch.full((2, num_classes), -0.7))

    @staticmethod
    def _tower(h: int, layers: int) -> nn.ModuleList:
        return nn.ModuleList(nn.Conv1d(h, h, 3, padding=1) for _ in range(layers))

    @property
    def strides(self) -> list[int]:
        return [2**level for level in range(self.cfg.levels)]

    def _head(
        self, tower: nn.ModuleList, out: nn.Conv1d, x: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        y = x.transpose(1, 2)  # (B, D, T)
        for conv in tower:
            y = F.relu(conv(y)) * mask[:, None].float()
        return out(y).transpose(1, 2)  # (B, T, out)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        parts = torch.split(self.input_norm(feats), self.set_dims, dim=-1)
        x = self.fuse(torch.cat([p(f) for p, f in zip(self.project, parts, strict=True)], -1))  # (B, T, H)
        x = F.relu(self.embed(x.transpose(1, 2))).transpose(1, 2) * mask[..., None].float()
        for block in self.stem:
            x = block(x, mask)
        levels = []
        for level in range(self.cfg.levels):
            if level > 0:
                x = F.max_pool1d(x.transpose(1, 2), 3, stride=2, padding=1).transpose(1, 2)  # (B, T/2, H)
                mask = mask[:, ::2]
                x = self.branch[level - 1](x.masked_fill(~mask[..., None], 0.0), mask)
            cls = self._head(self.cls_tower, self.cls_out, x, mask)  # (B, T_l, K)
            reg = F.relu(self.scales[level](self._head(self.reg_tower, self.reg_out, x, mask)))  # (B, T_l, 2)
            levels.append({"cls": cls, "reg": reg, "mask": mask})
        return levels

    def asl_weights(self, task: int, labels: torch.Tensor, rel_pos: torch.Tensor) -> torch.Tensor:
        """Gaussian weight per positive point: task 0 = classification, 1 = regression. Mean 1 over the batch."""
        mu = self.asl_mu[task, labels]  # (N,)
        sigma = self.asl_log_sigma[task, labels].exp()
        w = torch.exp(-0.5 * ((rel_pos - mu) / sigma) ** 2).clamp_min(0.1)  # every positive keeps some weight
        return w / w.mean().clamp_min(1e-6)

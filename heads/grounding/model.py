"""The grounding head: per frame, is the described object present, and which grid cells it covers.

Cells of each frame's patch grid (the vq2d preset) and the expression's token features (the text
preset) are projected to `hidden`; each cell attends to the tokens, a text-conditioned scale and
shift (FiLM) follows, then a temporal convolution per cell over neighbouring frames (what moves tells
the object the wearer acts on from a still look-alike) and spatial self-attention within the frame.
Outputs: a coverage logit per cell (trained against the share of the cell's pixels inside the mask)
and a presence logit per frame (from the max- and mean-pooled cells).
"""

from __future__ import annotations

import torch
from pydantic import NonNegativeFloat, PositiveInt
from pydantic.dataclasses import dataclass
from torch import nn

from heads.common import HEAD_CONFIG, Fraction, HeadConfig, InputNorm
from heads.vq2d.model import sincos_2d


@dataclass(config=HEAD_CONFIG)
class GroundingConfig(HeadConfig):
    hidden: PositiveInt = 64
    temporal_kernel: PositiveInt = 5  # frames each cell sees (odd)
    spatial_layers: PositiveInt = 1
    clip_len: PositiveInt = 24  # frames per training window
    positive_weight: NonNegativeFloat = 4.0  # weight of cells the object touches (objects are small)
    presence_weight: NonNegativeFloat = 1.0
    epochs: PositiveInt = 40
    batch_size: PositiveInt = 8
    # inference
    presence_threshold: Fraction = 0.5
    mask_fraction: Fraction = 0.5  # pixels at or above this fraction of the frame's peak are the mask


class GroundingHead(nn.Module):
    def __init__(self, cfg: GroundingConfig, grid_dim: int, text_dim: int):
        super().__init__()
        self.cfg, h = cfg, cfg.hidden
        self.grid_norm, self.text_norm = InputNorm(grid_dim), InputNorm(text_dim)
        self.cell_in = nn.Linear(grid_dim, h)
        self.text_in = nn.Linear(text_dim, h)
        self.cross = nn.MultiheadAttention(h, cfg.num_heads, dropout=cfg.dropout, batch_first=True)
        self.film = nn.Linear(h, 2 * h)
        k = cfg.temporal_kernel | 1
        self.temporal = nn.Conv1d(h, h, k, padding=k // 2)
        self.spatial = nn.ModuleList(
            nn.TransformerEncoderLayer(
                h, cfg.num_heads, 2 * h, cfg.dropout, batch_first=True, norm_first=True
            )
            for _ in range(cfg.spatial_layers)
        )
        self.norm = nn.LayerNorm(h)
        self.cell_out = nn.Linear(h, 1)
        self.presence_out = nn.Sequential(nn.Linear(2 * h, h), nn.GELU(), nn.Linear(h, 1))

    def forward(
        self, grids: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """grids [B, T, h, w, D], text [B, L, Dt], text_mask [B, L] (True = a token) ->
        {"cells": [B, T, h, w] logits, "presence": [B, T] logits}."""
        B, T, gh, gw, _ = grids.shape
        x = self.cell_in(self.grid_norm(grids.float())).reshape(B, T * gh * gw, -1)
        pos = sincos_2d(gh, gw, x.shape[-1]).to(x.device).repeat(T, 1)
        x = x + pos[None]
        t = self.text_in(self.text_norm(text.float()))  # [B, L, H]
        att, _ = self.cross(x, t, t, key_padding_mask=~text_mask)
        pooled = (t * text_mask[..., None]).sum(1) / text_mask.sum(1, keepdim=True).clamp_min(1)
        gamma, beta = self.film(pooled).chunk(2, -1)
        x = (x + att) * (1 + gamma[:, None]) + beta[:, None]
        # temporal mixing per cell: [B * cells, H, T]
        x = x.reshape(B, T, gh * gw, -1).permute(0, 2, 3, 1).reshape(B * gh * gw, -1, T)
        x = x + torch.relu(self.temporal(x))
        x = x.reshape(B, gh * gw, -1, T).permute(0, 3, 1, 2).reshape(B * T, gh * gw, -1)
        for layer in self.spatial:
            x = layer(x)
        x = self.norm(x)
        cells = self.cell_out(x).reshape(B, T, gh, gw)
        presence = self.presence_out(torch.cat([x.max(1).values, x.mean(1)], -1)).reshape(B, T)
        return {"cells": cells, "presence": presence}

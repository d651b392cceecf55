"""VQ2D head (VQLoC-style) on cached per-frame feature grids, with optional progressive refinement (PRVQL).

frames [B, T, h, w, D] + query tokens [B, Q, D] (the visual crop RoI-aligned on its frame's grid) ->
shared projection -> query-to-frame cross attention plus a correlation channel (cosine of every frame
token with every query token) -> spatio-temporal transformer (spatial attention within a frame, then
temporal attention per grid cell limited to a local window) -> per-cell anchors: objectness logit and
box deltas. A refinement stage takes the previous stage's output: appearance knowledge (features of the
top-scoring cells, pooled) refines the query; spatial knowledge (the objectness map) re-weights the frame
features; then the stage runs again with its own weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from pydantic.dataclasses import dataclass
from torch import nn

from heads.common import HEAD_CONFIG, Fraction, HeadConfig, InputNorm


@dataclass(config=HEAD_CONFIG)
class VQ2DConfig(HeadConfig):
    hidden: PositiveInt = 64
    query_size: PositiveInt = 3  # the crop is RoI-aligned to query_size x query_size tokens
    st_layers: PositiveInt = 1
    temporal_window: PositiveInt = 5  # temporal attention sees +-temporal_window//2 frames
    anchor_scales: tuple[PositiveFloat, ...] = (0.1, 0.2, 0.35, 0.6)  # anchor side / model input side
    anchor_ratios: tuple[PositiveFloat, ...] = (0.5, 1.0, 2.0)
    refine_stages: NonNegativeInt = 0  # extra PRVQL-style refinement stages
    refine_topk: PositiveInt = 8  # cells pooled into the appearance knowledge
    # training
    clip_len: PositiveInt = 24  # frames per training window
    positive_window_prob: Fraction = 0.7  # else a uniformly drawn window, usually all background frames
    pos_iou: Fraction = 0.5
    neg_iou: Fraction = 0.3
    neg_ratio: NonNegativeFloat = 3.0  # hard negatives per positive anchor
    min_negatives: NonNegativeInt = 64
    box_weight: NonNegativeFloat = 1.0
    epochs: PositiveInt = 60
    batch_size: PositiveInt = 4
    # inference
    infer_len: PositiveInt = 64  # frames per inference chunk (chunks overlap by the temporal window)
    smooth: PositiveInt = 5  # moving-average width on the score curve
    peak_threshold: Fraction = 0.5  # a peak must reach this fraction of the curve's maximum
    window_fraction: Fraction = 0.2  # the response window grows while scores stay above this x the peak


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes [h * w, dim] (grids of any size, no learned table)."""
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter) / max(1, quarter)))
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    parts = [f(a.flatten()[:, None] * freq[None]) for a in (xs, ys) for f in (torch.sin, torch.cos)]
    pe = torch.cat(parts, 1)  # (hw, 4 * quarter)
    return F.pad(pe, (0, dim - pe.shape[1]))


class STBlock(nn.Module):
    """Spatial self-attention within each frame, then temporal self-attention per cell (local window)."""

    def __init__(self, dim: int, heads: int, window: int, dropout: float):
        super().__init__()
        self.window = window
        self.spatial = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True
        )
        self.temporal = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True
        )

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        B, T, N, D = x.shape
        x = self.spatial(x.reshape(B * T, N, D)).reshape(B, T, N, D)
        idx = torch.arange(T, device=x.device)
        far = (idx[:, None] - idx[None, :]).abs() > self.window // 2  # (T, T) local temporal mask
        pad = (~frame_mask)[:, None, :].expand(B, N, T).reshape(B * N, T)
        y = x.permute(0, 2, 1, 3).reshape(B * N, T, D)  # (B*N, T, D) one sequence per cell
        y = self.temporal(y, src_mask=far, src_key_padding_mask=pad)
        return y.reshape(B, N, T, D).permute(0, 2, 1, 3)  # (B, T, N, D)


class Stage(nn.Module):
    """Query-to-frame attention + correlation, spatio-temporal blocks, anchor head."""

    def __init__(self, cfg: VQ2DConfig, num_anchors: int):
        super().__init__()
        h, q = cfg.hidden, cfg.query_size**2
        self.norm_f, self.norm_q = nn.LayerNorm(h), nn.LayerNorm(h)
        self.cross = nn.MultiheadAttention(h, cfg.num_heads, dropout=cfg.dropout, batch_first=True)
        self.corr = nn.Linear(q, h)
        self.blocks = nn.ModuleList(
            STBlock(h, cfg.num_heads, cfg.temporal_window, cfg.dropout) for _ in range(cfg.st_layers)
        )
        self.head = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, h), nn.GELU())
        self.objectness = nn.Linear(h, num_anchors)
        self.deltas = nn.Linear(h, num_anchors * 4)
        nn.init.constant_(self.objectness.bias, -4.0)  # rare foreground at the start
        nn.init.zeros_(self.deltas.weight)
        nn.init.zeros_(self.deltas.bias)

    def forward(self, f: torch.Tensor, q: torch.Tensor, frame_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        B, T, N, H = f.shape
        corr = F.normalize(f, dim=-1) @ F.normalize(q, dim=-1)[:, None].transpose(-1, -2)  # (B, T, N, Q)
        tokens = f.reshape(B, T * N, H)
        attended, _ = self.cross(self.norm_f(tokens), self.norm_q(q), self.norm_q(q), need_weights=False)
        x = f + attended.reshape(B, T, N, H) + self.corr(corr)  # (B, T, N, H)
        for block in self.blocks:
            x = block(x, frame_mask)
        z = self.head(x)
        A = self.objectness.out_features
        return {
            "features": x,
            "logits": self.objectness(z).reshape(B, T, N * A),  # (B, T, N*A) cell-major anchors
            "deltas": self.deltas(z).reshape(B, T, N * A, 4),
        }


class VisualQueryLocalizer(nn.Module):
    """forward(frames [B, T, h, w, D], query [B, Q, D], frame_mask [B, T]) -> one output dict per stage."""

    def __init__(self, cfg: VQ2DConfig, feature_dim: int):
        super().__init__()
        self.cfg = cfg
        self.num_anchors = len(cfg.anchor_scales) * len(cfg.anchor_ratios)
        self.input_norm = InputNorm(feature_dim)  # frames and crop tokens share the feature space
        self.project = nn.Sequential(nn.Linear(feature_dim, cfg.hidden), nn.LayerNorm(cfg.hidden))
        self.stages = nn.ModuleList(Stage(cfg, self.num_anchors) for _ in range(1 + cfg.refine_stages))
        self.appearance = nn.ModuleList(
            nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.hidden))
            for _ in range(cfg.refine_stages)
        )

    def forward(
        self, frames: torch.Tensor, query: torch.Tensor, frame_mask: torch.Tensor
    ) -> list[dict[str, torch.Tensor]]:
        B, T, h, w, _ = frames.shape
        f = self.project(self.input_norm(frames.float())).reshape(B, T, h * w, -1)  # (B, T, N, H)
        f = f + sincos_2d(h, w, f.shape[-1]).to(f)[None, None]
        q = self.project(self.input_norm(query.float()))  # (B, Q, H)
        outputs = [self.stages[0](f, q, frame_mask)]
        for s, stage in enumerate(self.stages[1:]):
            prev = outputs[-1]
            cell_score = prev["logits"].reshape(B, T, h * w, self.num_anchors).amax(-1)  # (B, T, N)
            cell_score = cell_score.masked_fill(~frame_mask[..., None], -1e4)
            # appearance knowledge: the top-scoring cells of the window, weighted by their scores
            flat = cell_score.reshape(B, T * h * w)
            k = min(self.cfg.refine_topk, flat.shape[1])
            top, idx = flat.topk(k, dim=1)  # (B, k)
            feats = prev["features"].reshape(B, T * h * w, -1)
            picked = torch.gather(feats, 1, idx[..., None].expand(-1, -1, feats.shape[-1]))  # (B, k, H)
            pooled = (torch.softmax(top, 1)[..., None] * picked).sum(1, keepdim=True)  # (B, 1, H)
            q = q + self.appearance[s](pooled)
            # spatial knowledge: the objectness map re-weights the frame features
            f = f * (1.0 + torch.sigmoid(cell_score))[..., None]
            outputs.append(stage(f, q, frame_mask))
        return outputs

"""A VSLNet-style span localizer on cached clip features and query text features.

video rows [B, T, Cv] and query tokens [B, L, Ct] (per-token features, or the CLS as L = 1) ->
shared feature encoder (depthwise convolutions + self-attention) -> context-query attention ->
query-conditioned concatenation -> highlighting (a per-row foreground score that re-weights the rows)
-> conditioned span predictor (the end encoder reads the start encoder's output) -> start / end logits.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, NonNegativeFloat, NonNegativeInt, PositiveInt
from pydantic.dataclasses import dataclass
from torch import nn
from torchvision.ops import nms

from heads.common import HEAD_CONFIG, Fraction, HeadConfig, InputNorm


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise ValueError(f"must be odd (a centred convolution), got {value}")
    return value


OddSize = Annotated[PositiveInt, AfterValidator(_odd)]

NEG_INF = -1e4  # large negative for masked logits; finite so fp16 / softmax stay NaN-free


@dataclass(config=HEAD_CONFIG)
class NLQConfig(HeadConfig):
    conv_layers: PositiveInt = 2
    kernel_size: OddSize = 7
    max_len: PositiveInt = 128  # video rows per clip after pooling (longer clips are average-pooled down)
    max_text_len: PositiveInt = 32
    use_tokens: bool = False  # per-token text features (text_tokens.pt) instead of the CLS (text_cls.pt)
    highlight_weight: NonNegativeFloat = 5.0
    highlight_extension: NonNegativeFloat = 0.1  # foreground region grown by this fraction of the window
    # inference
    top_k: PositiveInt = 5
    nms_iou: Fraction = 0.5
    max_span_rows: NonNegativeInt = 0  # 0: any span length


def masked_softmax_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~mask, NEG_INF)


class ConvBlock(nn.Module):
    """Pre-norm depthwise-separable 1-D convolution with a residual (QANet / VSLNet encoder block)."""

    def __init__(self, dim: int, kernel_size: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.pointwise = nn.Conv1d(dim, dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.norm(x).masked_fill(~mask[..., None], 0.0).transpose(1, 2)  # (B, D, T)
        y = self.pointwise(F.gelu(self.depthwise(y))).transpose(1, 2)  # (B, T, D)
        return x + self.drop(y)


class FeatureEncoder(nn.Module):
    """Positional embedding + conv blocks + one self-attention layer; shared by video and query."""

    def __init__(self, cfg: NLQConfig, max_positions: int):
        super().__init__()
        self.pos = nn.Embedding(max_positions, cfg.hidden)
        self.convs = nn.ModuleList(
            ConvBlock(cfg.hidden, cfg.kernel_size, cfg.dropout) for _ in range(cfg.conv_layers)
        )
        self.attn = nn.TransformerEncoderLayer(
            cfg.hidden, cfg.num_heads, 2 * cfg.hidden, cfg.dropout, batch_first=True, norm_first=True
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.pos(torch.arange(x.shape[1], device=x.device))[None]  # (B, T, D)
        for conv in self.convs:
            x = conv(x, mask)
        return self.attn(x, src_key_padding_mask=~mask)


class ContextQueryAttention(nn.Module):
    """VSLNet's context-query attention: trilinear similarity, context-to-query and query-to-context."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.w_c = nn.Linear(dim, 1, bias=False)
        self.w_q = nn.Linear(dim, 1, bias=False)
        self.w_cq = nn.Parameter(torch.empty(1, 1, dim).uniform_(-(dim**-0.5), dim**-0.5))
        self.out = nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, c: torch.Tensor, q: torch.Tensor, c_mask: torch.Tensor, q_mask: torch.Tensor
    ) -> torch.Tensor:
        # trilinear score: w_c . c + w_q . q + w_cq . (c * q)
        s = self.w_c(c) + self.w_q(q).transpose(1, 2) + (c * self.w_cq) @ q.transpose(1, 2)  # (B, T, L)
        s_r = torch.softmax(masked_softmax_logits(s, q_mask[:, None, :]), dim=2)  # over query tokens
        s_c = torch.softmax(masked_softmax_logits(s, c_mask[:, :, None]), dim=1)  # over video rows
        a = s_r @ q  # (B, T, D) context-to-query
        b = s_r @ (s_c.transpose(1, 2) @ c)  # (B, T, D) query-to-context
        return self.out(self.drop(torch.cat([c, a, c * a, c * b], dim=-1)))  # (B, T, D)


class QueryConcat(nn.Module):
    """Attention-pooled query vector appended to every row (VSLNet's CQConcatenate)."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, c: torch.Tensor, q: torch.Tensor, q_mask: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(masked_softmax_logits(self.score(q).squeeze(-1), q_mask), dim=1)  # (B, L)
        pooled = (w[..., None] * q).sum(1, keepdim=True).expand_as(c)  # (B, T, D)
        return self.out(torch.cat([c, pooled], dim=-1))


class SpanLocalizer(nn.Module):
    """The whole NLQ head; `forward` returns start / end / highlight logits [B, T], masked."""

    def __init__(self, cfg: NLQConfig, video_dim: int, text_dim: int):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.video_norm, self.text_norm = InputNorm(video_dim), InputNorm(text_dim)
        self.video_in = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(video_dim, h), nn.LayerNorm(h))
        self.text_in = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(text_dim, h), nn.LayerNorm(h))
        self.encoder = FeatureEncoder(cfg, max(cfg.max_len, cfg.max_text_len))
        self.cq_attention = ContextQueryAttention(h, cfg.dropout)
        self.cq_concat = QueryConcat(h)
        self.highlight = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))
        layer = dict(
            d_model=h, nhead=cfg.num_heads, dim_feedforward=2 * h, dropout=cfg.dropout, batch_first=True
        )
        self.start_encoder = nn.TransformerEncoderLayer(**layer, norm_first=True)
        self.end_encoder = nn.TransformerEncoderLayer(**layer, norm_first=True)
        self.start_head = nn.Sequential(nn.Linear(2 * h, h), nn.GELU(), nn.Linear(h, 1))
        self.end_head = nn.Sequential(nn.Linear(2 * h, h), nn.GELU(), nn.Linear(h, 1))

    def forward(
        self, video: torch.Tensor, video_mask: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        c = self.encoder(self.video_in(self.video_norm(video)), video_mask)  # (B, T, H)
        q = self.encoder(self.text_in(self.text_norm(text)), text_mask)  # (B, L, H)
        x = self.cq_concat(self.cq_attention(c, q, video_mask, text_mask), q, text_mask)  # (B, T, H)
        highlight = self.highlight(x).squeeze(-1)  # (B, T) foreground logits
        x = x * torch.sigmoid(highlight)[..., None]
        pad = ~video_mask
        h_start = self.start_encoder(x, src_key_padding_mask=pad)  # (B, T, H)
        h_end = self.end_encoder(h_start, src_key_padding_mask=pad)  # conditioned on the start encoding
        start = self.start_head(torch.cat([h_start, x], -1)).squeeze(-1)  # (B, T)
        end = self.end_head(torch.cat([h_end, x], -1)).squeeze(-1)  # (B, T)
        return {
            "start": masked_softmax_logits(start, video_mask),
            "end": masked_softmax_logits(end, video_mask),
            "highlight": highlight,
        }


def span_loss(
    out: dict[str, torch.Tensor],
    start_idx: torch.Tensor,
    end_idx: torch.Tensor,
    highlight: torch.Tensor,
    video_mask: torch.Tensor,
    highlight_weight: float,
) -> dict[str, torch.Tensor]:
    """Cross-entropy on start and end rows + masked BCE on the highlight targets [B, T]."""
    ce = F.cross_entropy(out["start"], start_idx) + F.cross_entropy(out["end"], end_idx)
    bce = F.binary_cross_entropy_with_logits(out["highlight"], highlight, reduction="none")  # (B, T)
    m = video_mask.float()
    hl = (bce * m).sum() / m.sum().clamp_min(1.0)
    return {"loss": ce + highlight_weight * hl, "span": ce.detach(), "highlight": hl.detach()}


def top_spans(
    start_logits: torch.Tensor, end_logits: torch.Tensor, k: int, nms_iou: float, max_span: int = 0
) -> list[tuple[int, int, float]]:
    """Best (start_row, end_row, score) spans of one query, end >= start, greedy NMS on row IoU.

    start_logits / end_logits: [T] (masked rows already very negative). Score = p_start * p_end. Rows
    are inclusive (span (s, e) covers e - s + 1 rows), so a span is the box [s, 0, e + 1, 1] for
    `torchvision.ops.nms`, which drops a span whose IoU with a kept one is above `nms_iou`.
    """
    p_s, p_e = torch.softmax(start_logits, 0), torch.softmax(end_logits, 0)  # (T,)
    T = p_s.shape[0]
    joint = p_s[:, None] * p_e[None, :]  # (T, T)
    valid = torch.ones(T, T, dtype=torch.bool).triu()
    if max_span > 0:
        valid &= ~torch.ones(T, T, dtype=torch.bool).triu(max_span)
    flat = valid.flatten().nonzero().flatten()  # candidate spans, row-major
    scores = joint.flatten()[flat]
    order = flat[torch.argsort(scores, descending=True, stable=True)]  # ties: the earlier span first
    starts, ends = (order // T).double(), (order % T).double()
    boxes = torch.stack([starts, torch.zeros_like(starts), ends + 1, torch.ones_like(starts)], 1)  # (N, 4)
    # rank-valued scores make nms follow the stable order exactly
    keep = nms(boxes, torch.arange(len(order), 0, -1, dtype=torch.float64), nms_iou)[:k]
    return [(int(order[i]) // T, int(order[i]) % T, float(joint.view(-1)[order[i]])) for i in keep.tolist()]

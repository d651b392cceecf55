"""Anchor boxes on the feature grid, box encoding, anchor targets and the VQ2D detection loss.

Boxes are (x1, y1, x2, y2) in normalized model-input coordinates [0, 1] (the letterboxed square the
extractor fed to the video tower). Objectness is trained with binary cross-entropy on every positive
anchor plus the hardest negatives of the batch (`neg_ratio` per positive, at least `min_negatives`), so the
negative (background) frames of a window contribute their most confident false alarms (hard-negative mining).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, generalized_box_iou_loss

MAX_LOG_SCALE = math.log(1000.0 / 16)


def make_anchors(h: int, w: int, scales: tuple, ratios: tuple) -> torch.Tensor:
    """[h * w * A, 4] anchors, cell-major (cell k's A anchors are rows k*A .. k*A + A - 1)."""
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    centres = torch.stack([xs.flatten(), ys.flatten()], 1)  # (hw, 2)
    sizes = torch.tensor([[s * math.sqrt(r), s / math.sqrt(r)] for s in scales for r in ratios])  # (A, 2)
    c = centres[:, None, :].expand(-1, len(sizes), -1)  # (hw, A, 2)
    half = sizes[None].expand(len(centres), -1, -1) / 2
    return torch.cat([c - half, c + half], -1).reshape(-1, 4)


def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Boxes [N, 4] relative to anchors [N, 4] -> deltas (dx, dy, dw, dh) [N, 4]."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    bw, bh = (boxes[:, 2] - boxes[:, 0]).clamp_min(1e-6), (boxes[:, 3] - boxes[:, 1]).clamp_min(1e-6)
    bx, by = boxes[:, 0] + bw / 2, boxes[:, 1] + bh / 2
    return torch.stack([(bx - ax) / aw, (by - ay) / ah, torch.log(bw / aw), torch.log(bh / ah)], 1)


def decode(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of `encode`: deltas [..., 4] on anchors [..., 4] -> boxes [..., 4]."""
    aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    ax, ay = anchors[..., 0] + aw / 2, anchors[..., 1] + ah / 2
    cx, cy = ax + deltas[..., 0] * aw, ay + deltas[..., 1] * ah
    bw = aw * deltas[..., 2].clamp(max=MAX_LOG_SCALE).exp()
    bh = ah * deltas[..., 3].clamp(max=MAX_LOG_SCALE).exp()
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)


def anchor_labels(
    anchors: torch.Tensor, box: torch.Tensor | None, pos_iou: float, neg_iou: float
) -> torch.Tensor:
    """[N] labels: 1 positive, 0 negative, -1 ignored. No box (a background frame): every anchor negative.
    The best-matching anchor is always positive so small objects get at least one."""
    labels = torch.zeros(anchors.shape[0])
    if box is None:
        return labels
    iou = box_iou(anchors, box[None])[:, 0]  # (N,)
    labels[(iou >= neg_iou) & (iou < pos_iou)] = -1
    labels[iou >= pos_iou] = 1
    labels[iou.argmax()] = 1
    return labels


def detection_loss(
    logits: torch.Tensor,
    deltas: torch.Tensor,
    labels: torch.Tensor,
    boxes: torch.Tensor,
    anchors: torch.Tensor,
    neg_ratio: float,
    min_negatives: int,
    box_weight: float,
) -> dict[str, torch.Tensor]:
    """logits [M, N], deltas [M, N, 4], labels [M, N] (M frames), boxes [M, 4] (gt box per frame, any
    value on background frames), anchors [N, 4] -> objectness BCE with hard negatives + GIoU on positives."""
    pos = labels == 1
    neg = labels == 0
    bce = F.binary_cross_entropy_with_logits(logits, pos.float(), reduction="none")  # (M, N)
    n_pos = int(pos.sum())
    n_neg = min(int(neg.sum()), max(min_negatives, int(neg_ratio * n_pos)))
    hard = torch.topk(bce[neg], n_neg).values if n_neg > 0 else bce.new_zeros(0)  # hardest negatives
    obj = (bce[pos].sum() + hard.sum()) / max(1, n_pos + n_neg)
    if n_pos:
        frame = pos.nonzero()[:, 0]
        pred = decode(deltas[pos], anchors[None].expand(labels.shape[0], -1, -1)[pos])  # (P, 4)
        giou = generalized_box_iou_loss(pred, boxes[frame], reduction="mean")
    else:
        giou = logits.new_zeros(())
    return {"loss": obj + box_weight * giou, "obj": obj.detach(), "box": giou.detach()}

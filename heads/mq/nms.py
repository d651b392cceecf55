"""Post-processing of MQ detections: decode pyramid outputs into scored segments, Gaussian Soft-NMS per class.

Soft-NMS (Bodla et al.) keeps every detection but decays the score of one that overlaps a higher-scoring
detection of the same class: score *= exp(-IoU^2 / sigma). Overlapping moments of different classes are
common in Ego4D MQ, so suppression never crosses classes. (torchvision has hard NMS only: Soft-NMS
keeps its own loop, on the shared `egovlp.metrics.iou.segment_iou`.)
"""

from __future__ import annotations

import torch

from egovlp.metrics.iou import segment_iou


def soft_nms(
    segments: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    max_keep: int = 100,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussian Soft-NMS within each class. segments [N, 2], scores [N], labels [N] -> the kept ones,
    sorted by their decayed score (at most `max_keep`, scores >= `min_score`)."""
    out_seg, out_score, out_label = [], [], []
    for label in labels.unique(sorted=True).tolist():
        idx = (labels == label).nonzero().flatten()
        seg, sc = segments[idx].clone(), scores[idx].clone()
        picked = 0
        # within a class the picked scores never increase, so `max_keep` picks per class suffice
        while sc.numel() > 0 and picked < max_keep:
            picked += 1
            top = int(sc.argmax())
            if float(sc[top]) < min_score:
                break
            out_seg.append(seg[top])
            out_score.append(sc[top])
            out_label.append(label)
            keep = torch.ones(sc.numel(), dtype=torch.bool)
            keep[top] = False
            best = seg[top]
            seg, sc = seg[keep], sc[keep]
            sc = sc * torch.exp(-(segment_iou(best, seg) ** 2) / sigma)  # (n,)
    if not out_seg:
        return segments.new_zeros(0, 2), scores.new_zeros(0), labels.new_zeros(0)
    seg_t, score_t = torch.stack(out_seg), torch.stack(out_score)
    label_t = torch.tensor(out_label, dtype=labels.dtype)
    order = torch.argsort(score_t, descending=True, stable=True)[:max_keep]
    return seg_t[order], score_t[order], label_t[order]


def decode_levels(
    levels: list[dict[str, torch.Tensor]], strides: list[int], threshold: float, topk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One clip's outputs (batch index already taken: cls [T_l, K], reg [T_l, 2], mask [T_l]) ->
    candidate segments [N, 2] in rows, scores [N], labels [N] (top-k per level above `threshold`)."""
    segs, scores, labels = [], [], []
    for lv, s in zip(levels, strides, strict=True):
        prob = torch.sigmoid(lv["cls"]) * lv["mask"][:, None]  # (T_l, K)
        flat = prob.flatten()
        keep = (flat > threshold).nonzero().flatten()
        keep = keep[torch.argsort(flat[keep], descending=True, stable=True)[:topk]]
        point, label = keep // prob.shape[1], keep % prob.shape[1]
        center = (point.float() + 0.5) * s
        reg = lv["reg"][point] * s  # (N, 2) rows
        segs.append(torch.stack([center - reg[:, 0], center + reg[:, 1]], 1))
        scores.append(flat[keep])
        labels.append(label)
    return torch.cat(segs), torch.cat(scores), torch.cat(labels)

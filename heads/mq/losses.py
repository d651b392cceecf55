"""MQ training targets and losses: center-sampled label assignment over the pyramid points, sigmoid focal
loss on classes, 1-D DIoU loss on boundaries, and the optional ASL action-sensitivity weighting.

Coordinates are in feature rows: point i of a level with stride s sits at (i + 0.5) * s; an action
[start, end] in rows is regressed as (center - start, end - center) / s.
"""

from __future__ import annotations

import torch
from torchvision.ops import sigmoid_focal_loss

from heads.mq.model import MomentDetector, MQConfig


def point_grid(lengths: list[int], strides: list[int], ranges: tuple) -> torch.Tensor:
    """[P, 4] (center, stride, range_lo, range_hi) for every point of every level, levels concatenated."""
    rows = []
    for T, s, (lo, hi) in zip(lengths, strides, ranges, strict=True):
        centers = (torch.arange(T, dtype=torch.float32) + 0.5) * s
        rows.append(
            torch.stack(
                [
                    centers,
                    torch.full_like(centers, s),
                    torch.full_like(centers, lo),
                    torch.full_like(centers, hi),
                ],
                1,
            )
        )
    return torch.cat(rows)


def assign_targets(
    points: torch.Tensor, segments: torch.Tensor, labels: torch.Tensor, num_classes: int, radius: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One clip: points [P, 4], segments [G, 2] (rows), labels [G] ->
    cls targets [P, K] (one-hot, zero for background), reg targets [P, 2] (in strides), the matched
    segment's label [P] (-1 background) and the point's relative position inside it [P]."""
    P = points.shape[0]
    cls_t = torch.zeros(P, num_classes)
    if segments.numel() == 0:
        return cls_t, torch.zeros(P, 2), torch.full((P,), -1, dtype=torch.long), torch.zeros(P)
    c, s, lo, hi = points[:, 0:1], points[:, 1:2], points[:, 2:3], points[:, 3:4]  # (P, 1)
    start, end = segments[None, :, 0], segments[None, :, 1]  # (1, G)
    left, right = c - start, end - c  # (P, G)
    mid = 0.5 * (start + end)
    # center sampling: the point lies within radius * stride of the middle, and inside the action
    inside = (left > 0) & (right > 0) & ((c - mid).abs() <= radius * s)
    reach = torch.maximum(left, right)
    in_range = (reach >= lo) & (reach <= hi)
    length = (end - start).expand(P, -1).clone()
    length[~(inside & in_range)] = float("inf")
    best_len, best = length.min(dim=1)  # (P,) the shortest action that claims the point
    positive = torch.isfinite(best_len)
    matched = torch.where(positive, labels[best], torch.full_like(best, -1))
    cls_t[positive, labels[best[positive]]] = 1.0
    idx = torch.arange(P)
    reg_t = torch.stack([left[idx, best], right[idx, best]], 1) / s  # (P, 2)
    rel = ((c[:, 0] - start[0, best]) / (end[0, best] - start[0, best]).clamp_min(1e-6)).clamp(0, 1)
    return cls_t, reg_t * positive[:, None], matched, rel * positive


def diou_loss_1d(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-D Distance-IoU loss for (left, right) offsets from a shared point, [N, 2] each -> [N]."""
    p_l, p_r, t_l, t_r = pred[:, 0], pred[:, 1], target[:, 0], target[:, 1]
    inter = torch.minimum(p_l, t_l) + torch.minimum(p_r, t_r)
    union = (p_l + p_r) + (t_l + t_r) - inter
    iou = inter / union.clamp_min(1e-6)
    enclose = torch.maximum(p_l, t_l) + torch.maximum(p_r, t_r)
    center_gap = 0.5 * ((p_r - p_l) - (t_r - t_l))  # distance between the two segment centres
    return 1.0 - iou + (center_gap / enclose.clamp_min(1e-6)) ** 2


def detection_loss(
    model: MomentDetector,
    levels: list[dict[str, torch.Tensor]],
    segments: list[torch.Tensor],
    labels: list[torch.Tensor],
    cfg: MQConfig,
) -> dict[str, torch.Tensor]:
    """Focal + DIoU over all valid points of the batch, normalized by the number of positive points."""
    strides = model.strides
    points = point_grid([lv["cls"].shape[1] for lv in levels], strides, cfg.regression_ranges)
    cls = torch.cat([lv["cls"] for lv in levels], 1)  # (B, P, K)
    reg = torch.cat([lv["reg"] for lv in levels], 1)  # (B, P, 2)
    mask = torch.cat([lv["mask"] for lv in levels], 1)  # (B, P)
    targets = [
        assign_targets(points, g, lab, model.num_classes, cfg.center_radius)
        for g, lab in zip(segments, labels, strict=True)
    ]
    cls_t = torch.stack([t[0] for t in targets]).to(cls.device)  # (B, P, K)
    reg_t = torch.stack([t[1] for t in targets]).to(cls.device)  # (B, P, 2)
    matched = torch.stack([t[2] for t in targets]).to(cls.device)  # (B, P)
    rel = torch.stack([t[3] for t in targets]).to(cls.device)  # (B, P)
    pos = (matched >= 0) & mask
    n_pos = pos.sum().clamp_min(1).float()
    if cfg.label_smoothing > 0:
        cls_t = cls_t * (1 - cfg.label_smoothing) + cfg.label_smoothing / (model.num_classes + 1)
    focal = sigmoid_focal_loss(
        cls[mask], cls_t[mask], cfg.focal_alpha, cfg.focal_gamma, reduction="none"
    )  # (N, K)
    point_focal = focal.sum(-1)  # (N,)
    diou = diou_loss_1d(reg[pos], reg_t[pos])  # (N_pos,)
    if cfg.asl and pos.any():
        w_cls = torch.ones_like(point_focal)
        w_cls[pos[mask]] = model.asl_weights(0, matched[pos], rel[pos])
        point_focal = point_focal * w_cls
        diou = diou * model.asl_weights(1, matched[pos], rel[pos])
    cls_loss = point_focal.sum() / n_pos
    reg_loss = diou.sum() / n_pos
    return {"loss": cls_loss + cfg.reg_weight * reg_loss, "cls": cls_loss.detach(), "reg": reg_loss.detach()}

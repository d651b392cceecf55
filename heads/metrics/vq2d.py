"""Ego4D Visual Queries 2D metrics (DESIGN.md C.4): tAP, stAP, success and recovery.

Each valid query set is one item with one ground-truth response track and one predicted track. The
predicted tracks of all items are ranked together by score (ties keep ground-truth order) and scored as
detections of their own item's track with ActivityNet AP and VOC-2011 interpolation:
- tAP on temporal extents (first frame, last frame) with the inclusive frame convention
  tIoU = (min(e1, e2) - max(s1, s2) + 1) / ((e1 - s1 + 1) + (e2 - s2 + 1) - intersection);
- stAP with the spatio-temporal IoU: the summed box intersections over the frames both tracks share,
  over (volume1 + volume2 - intersection), a track's volume being the sum of its box areas.
Both at 0.25, 0.5, 0.75, 0.95 (the headline numbers are the mean, and the value at 0.25), as fractions.
success: % of items whose top prediction has ST-IoU >= 0.05. recovery: 100 x the ground-truth frames
whose box IoU with the top prediction's box on that frame is >= 0.5, over all ground-truth frames.

Tracks may have gaps (missing frames simply share nothing). A query set predicted with an empty track
predicted nothing: it is left out of the ranking (its ground truth still counts as a positive), and it
fails success and recovers no frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from heads.metrics.io import Box, parse_vq2d
from heads.metrics.mq import ap_from_ranked_hits, rank_by_score

THRESHOLDS = (0.25, 0.5, 0.75, 0.95)
SUCCESS_ST_IOU = 0.05
RECOVERY_IOU = 0.5

Track = dict[int, Box]  # frame number -> (x1, y1, x2, y2)


def box_area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def box_intersection(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def box_iou(a: Box, b: Box) -> float:
    """IoU of two boxes; two zero-area boxes (empty union) give 0."""
    inter = box_intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def temporal_iou(a: Track, b: Track) -> float:
    """Inclusive-frame tIoU of the two tracks' extents (first frame, last frame)."""
    s1, e1, s2, e2 = min(a), max(a), min(b), max(b)
    inter = max(0, min(e1, e2) - max(s1, s2) + 1)
    return inter / ((e1 - s1 + 1) + (e2 - s2 + 1) - inter)


def spatio_temporal_iou(a: Track, b: Track) -> float:
    """Summed per-frame box intersections over the union of the two track volumes; 0 if both are empty."""
    inter = sum(box_intersection(a[f], b[f]) for f in a.keys() & b.keys())
    union = sum(map(box_area, a.values())) + sum(map(box_area, b.values())) - inter
    return inter / union if union > 0 else 0.0


def recovered_frames(pred: Track, gt: Track) -> int:
    """Ground-truth frames whose box the prediction's box on the same frame overlaps with IoU >= 0.5."""
    return sum(1 for f, box in gt.items() if f in pred and box_iou(pred[f], box) >= RECOVERY_IOU)


def vq2d_metrics(
    gt: dict[str, Any], pred: dict[str, Any], *, gt_name: str = "ground truth", pred_name: str = "predictions"
) -> dict[str, float]:
    """Score VQ2D predictions (in ground-truth order) against a `vq_val.json`-style file; the C.5 dict."""
    items = parse_vq2d(gt, pred, gt_name, pred_name)
    predicted = [item for item in items if item.pred]
    order = rank_by_score(np.array([item.score for item in predicted], dtype=np.float64))
    ranked = [predicted[i] for i in order]
    t_iou = np.array([temporal_iou(item.pred, item.gt) for item in ranked])  # [P] in rank order
    st_iou = np.array([spatio_temporal_iou(item.pred, item.gt) for item in ranked])  # [P]
    thresholds = np.array(THRESHOLDS)[:, None]  # [T, 1]
    # one ground truth per item and one prediction per item: a prediction is a TP iff its IoU >= t
    t_ap = ap_from_ranked_hits((t_iou[None, :] >= thresholds).astype(np.float64), len(items))  # [T]
    st_ap = ap_from_ranked_hits((st_iou[None, :] >= thresholds).astype(np.float64), len(items))  # [T]
    successes = int((st_iou >= SUCCESS_ST_IOU).sum())
    recovered = sum(recovered_frames(item.pred, item.gt) for item in predicted)
    gt_frames = sum(len(item.gt) for item in items)
    return {
        "tAP": float(t_ap.mean()),
        "tAP25": float(t_ap[0]),
        "stAP": float(st_ap.mean()),
        "stAP25": float(st_ap[0]),
        "success": 100.0 * successes / len(items),
        "recovery": 100.0 * recovered / gt_frames,
    }

"""Ego4D Visual Queries 2D metrics (docs/design.md C.4): tAP, stAP, success and recovery.

Each valid query set is one item with one ground-truth response track and one predicted track. The
predicted tracks of all items are ranked together by score (ties keep ground-truth order) and scored as
detections of their own item's track with ActivityNet AP and VOC-2011 interpolation:
- tAP on temporal extents (first frame, last frame) with the inclusive frame convention
  tIoU = (min(e1, e2) - max(s1, s2) + 1) / ((e1 - s1 + 1) + (e2 - s2 + 1) - intersection)
  (`egovlp.metrics.iou.segment_iou(..., inclusive=True)`: a frame index covers a whole frame, so a
  single-frame track [f, f] has length 1, unlike the continuous seconds of NLQ and MQ);
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

from egovlp.metrics.io import parse_vq2d
from egovlp.metrics.iou import Box, box_area, box_intersection, box_iou, segment_iou
from egovlp.metrics.mq import ap_from_ranked_hits, rank_by_score

THRESHOLDS = (0.25, 0.5, 0.75, 0.95)
SUCCESS_ST_IOU = 0.05
RECOVERY_IOU = 0.5

Track = dict[int, Box]  # frame number -> (x1, y1, x2, y2)


def extent(track: Track) -> tuple[int, int]:
    """(first frame, last frame) of a track: what tAP scores, with the inclusive tIoU."""
    return min(track), max(track)


def _boxes(track: Track, frames: list[int]) -> np.ndarray:
    return np.array([track[f] for f in frames], dtype=np.float64).reshape(-1, 4)  # [F, 4]


def spatio_temporal_iou(a: Track, b: Track) -> float:
    """Summed per-frame box intersections over the union of the two track volumes; 0 if both are empty."""
    shared = sorted(a.keys() & b.keys())
    inter = float(box_intersection(_boxes(a, shared), _boxes(b, shared)).sum())
    union = float(box_area(_boxes(a, list(a))).sum()) + float(box_area(_boxes(b, list(b))).sum()) - inter
    return inter / union if union > 0 else 0.0


def recovered_frames(pred: Track, gt: Track) -> int:
    """Ground-truth frames whose box the prediction's box on the same frame overlaps with IoU >= 0.5."""
    shared = [f for f in gt if f in pred]
    return int((box_iou(_boxes(pred, shared), _boxes(gt, shared)) >= RECOVERY_IOU).sum())


def vq2d_metrics(
    gt: dict[str, Any], pred: dict[str, Any], *, gt_name: str = "ground truth", pred_name: str = "predictions"
) -> dict[str, float]:
    """Score VQ2D predictions (in ground-truth order) against a `vq_val.json`-style file; the C.5 dict."""
    items = parse_vq2d(gt, pred, gt_name, pred_name)
    predicted = [item for item in items if item.pred]
    order = rank_by_score(np.array([item.score for item in predicted], dtype=np.float64))
    ranked = [predicted[i] for i in order]
    extents = np.array([[extent(item.pred), extent(item.gt)] for item in ranked]).reshape(
        -1, 2, 2
    )  # [P, 2, 2]
    t_iou = segment_iou(extents[:, 0], extents[:, 1], inclusive=True)  # [P] in rank order
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

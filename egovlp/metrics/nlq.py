"""Ego4D Natural Language Queries metric (docs/design.md C.2): Recall@k at tIoU thresholds, and mIoU.

The official definition, to the letter: for each prediction entry the ranked windows are compared with
the query's ground-truth window; a hit at (k, t) needs one of the first k IoUs **strictly greater**
than t; recall is averaged over the prediction entries (not over every ground-truth query), and mIoU is
the mean IoU of the rank-1 window. Results are in percent, as the official script prints them.

The IoU is `egovlp.metrics.iou.segment_iou` on seconds. The official script divides by the hull (min start ..
max end); that equals the true union whenever the windows overlap, and the intersection is 0
otherwise, so both give the same IoU. Two equal points (an empty union) give 0.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from egovlp.metrics.io import NlqPrediction, Window, parse_nlq_ground_truth, parse_nlq_predictions
from egovlp.metrics.iou import segment_iou

logger = logging.getLogger(__name__)

THRESHOLDS = (0.3, 0.5)
TOP_K = (1, 3, 5)


def nlq_metrics(
    gt: dict[str, Any], pred: dict[str, Any], *, gt_name: str = "ground truth", pred_name: str = "predictions"
) -> dict[str, float | int]:
    """Score NLQ predictions against an `nlq_val.json`-style ground truth; returns the C.5 dict.

    `gt_name` / `pred_name` label error messages (the CLI passes the file paths). A prediction naming a
    query that is not in the ground truth, or naming one query twice, is an InputError; a prediction
    with fewer than 5 windows is allowed and its missing ranks are misses.
    """
    truth = parse_nlq_ground_truth(gt, gt_name)
    entries = parse_nlq_predictions(pred, pred_name)
    first_seen: dict[tuple, NlqPrediction] = {}
    hits = {(k, t): 0 for t in THRESHOLDS for k in TOP_K}
    rank1_iou = 0.0
    for entry in entries:
        window = _ground_truth_window(entry, truth.windows, first_seen, gt_name)
        ious = segment_iou(np.array(entry.windows, dtype=np.float64).reshape(-1, 2), np.array(window))  # [W]
        rank1_iou += float(ious[0]) if len(ious) else 0.0
        for t in THRESHOLDS:
            for k in TOP_K:
                hits[(k, t)] += bool((ious[:k] > t).any())
    n = len(entries)
    if n == 0:
        logger.warning("%s holds no prediction entries; every recall is 0", pred_name)
    logger.info("evaluated %d / %d language queries", n, truth.total)
    out: dict[str, float | int] = {
        f"R{k}@{t}": 100.0 * hits[(k, t)] / n if n else 0.0 for t in THRESHOLDS for k in TOP_K
    }
    out["mIoU"] = 100.0 * rank1_iou / n if n else 0.0
    out["evaluated"] = n
    out["total"] = truth.total
    return out


def _ground_truth_window(
    entry: NlqPrediction,
    windows: dict[tuple, Window | None],
    first_seen: dict[tuple, NlqPrediction],
    gt_name: str,
) -> Window:
    clip_uid, ann_uid, idx = entry.key
    if entry.key not in windows:
        if any(key[:2] == (clip_uid, ann_uid) for key in windows):
            raise entry.loc.key("query_idx").error(
                f"annotation {ann_uid!r} of clip {clip_uid!r} has no language query {idx} in {gt_name}"
            )
        raise entry.loc.error(f"clip_uid {clip_uid!r} / annotation_uid {ann_uid!r} is not in {gt_name}")
    if entry.key in first_seen:
        raise entry.loc.error(
            f"a second prediction for the query already predicted at {first_seen[entry.key].loc.path}"
        )
    first_seen[entry.key] = entry
    window = windows[entry.key]
    if window is None:
        raise entry.loc.error(f"the ground-truth query has no text and no window in {gt_name}")
    return window

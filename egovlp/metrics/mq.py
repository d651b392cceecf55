"""Ego4D Moment Queries metric (docs/design.md C.3): ActivityNet detection mAP and Recall@1x.

mAP: for each class present in the ground truth, its detections are ranked by score (ties keep file
order) and each one is matched greedily to the not-yet-matched ground truth of the same clip and class
with the highest tIoU; it is a true positive if that tIoU >= t. AP is the VOC interpolated area under
the precision/recall curve (the ActivityNet `interpolated_prec_rec`); classes are averaged, then the
thresholds 0.1..0.5. Recall@1x at 0.5: per class and clip, the top 1 x (number of ground truths of the
class in the clip) detections; a ground truth counts if one of them reaches tIoU >= 0.5; the per-class
recalls are averaged over the classes present in the ground truth. Percent.

The ranking and VOC interpolation here are shared with the VQ2D metric.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np

from egovlp.metrics.io import Loc, MqInstance, parse_mq_ground_truth, parse_mq_predictions
from egovlp.metrics.iou import segment_iou

logger = logging.getLogger(__name__)

TIOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
RECALL_TIOU = 0.5
RECALL_TOP_X = 1


def voc_interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision envelope, VOC 2011 style (recall padded with 0 and 1, precision with 0)."""
    prec = np.concatenate([[0.0], precision, [0.0]])
    rec = np.concatenate([[0.0], recall, [1.0]])
    prec = np.maximum.accumulate(prec[::-1])[::-1]  # precision at recall r = best precision at recall >= r
    steps = np.flatnonzero(rec[1:] != rec[:-1]) + 1
    return float(np.sum((rec[steps] - rec[steps - 1]) * prec[steps]))


def ap_from_ranked_hits(hits: np.ndarray, n_positives: int) -> np.ndarray:
    """AP per row of `hits` [T, P]: true-positive flags of P detections already ranked by score."""
    if hits.shape[1] == 0 or n_positives == 0:
        return np.zeros(hits.shape[0])
    tp = np.cumsum(hits, axis=1, dtype=np.float64)  # [T, P]
    fp = np.cumsum(1.0 - hits, axis=1)  # [T, P]
    recall, precision = tp / n_positives, tp / (tp + fp)
    return np.array([voc_interpolated_ap(precision[i], recall[i]) for i in range(hits.shape[0])])


def rank_by_score(scores: np.ndarray) -> np.ndarray:
    """Indices by decreasing score; equal scores keep their input order (a stable, documented tie rule)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def mq_metrics(
    gt: dict[str, Any], pred: dict[str, Any], *, gt_name: str = "ground truth", pred_name: str = "predictions"
) -> dict[str, float]:
    """Score MQ detections against a `moments_val.json`-style ground truth; returns the C.5 dict."""
    truth = parse_mq_ground_truth(gt, gt_name)
    if not truth:
        raise Loc(gt_name).error("no primary moment labels to score")
    detections = parse_mq_predictions(pred, pred_name)
    gt_by_class: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for m in truth:
        gt_by_class[m.label][m.clip_uid].append((m.start, m.end))
    det_by_class: dict[str, list[MqInstance]] = defaultdict(list)
    for d in detections:
        det_by_class[d.label].append(d)
    _log_ignored(detections, gt_by_class, {m.clip_uid for m in truth}, pred_name)

    thresholds = np.array(TIOU_THRESHOLDS)
    ap = np.zeros((len(gt_by_class), len(thresholds)))  # [C, T]
    recall = np.zeros(len(gt_by_class))  # [C]
    for c, (label, gt_clips) in enumerate(sorted(gt_by_class.items())):
        gt_arrays = {clip: np.array(wins, dtype=np.float64) for clip, wins in gt_clips.items()}
        dets = det_by_class.get(label, [])
        ap[c] = _class_ap(gt_arrays, dets, thresholds)
        recall[c] = _class_recall(gt_arrays, dets)
    mean_ap = ap.mean(axis=0)  # [T]: mean over the classes present in the ground truth
    out = {f"mAP@{t:g}": 100.0 * float(v) for t, v in zip(TIOU_THRESHOLDS, mean_ap, strict=True)}
    out["mAP"] = 100.0 * float(mean_ap.mean())
    out[f"R{RECALL_TOP_X}x@{RECALL_TIOU:g}"] = 100.0 * float(recall.mean())
    return out


def _class_ap(gt: dict[str, np.ndarray], dets: list[MqInstance], thresholds: np.ndarray) -> np.ndarray:
    """AP at each threshold for one class; gt maps clip -> [G, 2] windows."""
    n_pos = sum(len(g) for g in gt.values())
    if not dets:
        return np.zeros(len(thresholds))
    order = rank_by_score(np.array([d.score for d in dets]))
    segments = np.array([(d.start, d.end) for d in dets], dtype=np.float64)[order]  # [P, 2] ranked
    clips = [dets[i].clip_uid for i in order]
    hits = np.zeros((len(thresholds), len(order)))  # [T, P]
    # matching only interacts within one clip, so each clip's detections (in global rank order) are
    # matched on their own; a detection in a clip without ground truth of this class stays a false positive
    ranks_by_clip: dict[str, list[int]] = defaultdict(list)
    for rank, clip in enumerate(clips):
        ranks_by_clip[clip].append(rank)
    for clip, ranks in ranks_by_clip.items():
        if clip in gt:
            hits[:, ranks] = _greedy_match(segment_iou(segments[ranks][:, None], gt[clip][None]), thresholds)
    return ap_from_ranked_hits(hits, n_pos)


def _greedy_match(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """TP flags [T, P] for ranked detections with tIoUs `ious` [P, G] against one clip's ground truth."""
    hits = np.zeros((len(thresholds), ious.shape[0]))
    taken = np.zeros((len(thresholds), ious.shape[1]), dtype=bool)  # [T, G] ground truth already matched
    rows = np.arange(len(thresholds))
    for p in np.flatnonzero(ious.max(axis=1) >= thresholds.min()):  # others are misses at every threshold
        free = np.where(taken, -1.0, ious[p][None, :])  # [T, G]
        best = free.argmax(axis=1)  # highest tIoU among the unmatched; ties go to the first ground truth
        ok = free[rows, best] >= thresholds
        hits[ok, p] = 1.0
        taken[rows[ok], best[ok]] = True
    return hits


def _class_recall(gt: dict[str, np.ndarray], dets: list[MqInstance]) -> float:
    by_clip: dict[str, list[MqInstance]] = defaultdict(list)
    for d in dets:
        by_clip[d.clip_uid].append(d)
    found = total = 0
    for clip, windows in gt.items():
        total += len(windows)
        clip_dets = by_clip.get(clip)
        if not clip_dets:
            continue
        top = rank_by_score(np.array([d.score for d in clip_dets]))[: RECALL_TOP_X * len(windows)]
        segments = np.array([(clip_dets[i].start, clip_dets[i].end) for i in top], dtype=np.float64)
        found += int((segment_iou(segments[:, None], windows[None]) >= RECALL_TIOU).any(axis=0).sum())
    return found / total


def _log_ignored(dets: list[MqInstance], gt_by_class: dict, gt_clips: set[str], pred_name: str) -> None:
    unknown_class = sum(d.label not in gt_by_class for d in dets)
    unknown_clip = sum(d.clip_uid not in gt_clips for d in dets)
    if unknown_class:
        logger.warning(
            "%s: %d detections of classes absent from the ground truth are ignored", pred_name, unknown_class
        )
    if unknown_clip:
        logger.warning(
            "%s: %d detections on clips absent from the ground truth count as false positives",
            pred_name,
            unknown_clip,
        )

"""Spatio-temporal grounding metrics of EgoMask (docs/design.md C.6): per query, over a file of queries,
and over a ground-truth / prediction folder pair in EgoMask's own layout (`egomask_metrics`).

A query has ground-truth regions per frame and predicted regions per frame. A region is a mask (2-D
bool array, nested 0/1 lists, or COCO RLE `{"size": [h, w], "counts": ...}`), a box `[x1, y1, x2, y2]`,
or empty (`None`, `[]`, an all-false mask, a zero-area box). The frames scored are those named by
either side; a frame one side does not name is empty on that side. With "ground-truth frames" the
frames whose ground truth is non-empty and "predicted frames" those whose prediction is non-empty:
- T_recall: the share of ground-truth frames that are also predicted frames;
- IoU_all: mean per-frame IoU over all frames (empty vs empty = 1, empty vs non-empty = 0);
- IoU_gold: mean IoU over the ground-truth frames;
- IoU_gold_pred: mean IoU over the union of ground-truth and predicted frames (predicting the object
  on a background frame costs a 0 here).
A mean over no frames at all is 1 (nothing was missed), the same convention as empty vs empty. Percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from egovlp.metrics.egomask import (
    SUBSETS,
    Expression,
    decode_rle,
    prediction_path,
    read_annotation,
    read_ground_truth,
)
from egovlp.metrics.io import Loc, as_dict, as_number, get, load_json
from egovlp.metrics.iou import box_iou

KEYS = ("T_recall", "IoU_all", "IoU_gold", "IoU_gold_pred")

Region = tuple[float, float, float, float] | np.ndarray | None  # box, bool mask [H, W], or empty


def grounding_metrics(gt_masks: Mapping[Any, Any], pred_masks: Mapping[Any, Any]) -> dict[str, float]:
    """The C.6 metrics (percent) of one query; both arguments map frame -> mask, box or None."""
    return _query_metrics(gt_masks, pred_masks, Loc("ground-truth masks"), Loc("predicted masks"))


def grounding_file_metrics(
    gt: dict[str, Any], pred: dict[str, Any], *, gt_name: str = "ground truth", pred_name: str = "predictions"
) -> dict[str, float | int]:
    """Mean of the per-query metrics over every query of a grounding file pair.

    Ground truth: `{"queries": {QUERY_ID: {"frames": {FRAME: REGION}, ...}}}`; predictions:
    `{"results": {QUERY_ID: {"frames": {FRAME: REGION}}}}`. Every ground-truth query needs a
    prediction (an empty `frames` object predicts nothing); a prediction for an unknown query is an error.
    """
    groot, proot = Loc(gt_name), Loc(pred_name)
    queries, qloc = get(as_dict(gt, groot), "queries", groot)
    results, rloc = get(as_dict(pred, proot), "results", proot)
    queries, results = as_dict(queries, qloc), as_dict(results, rloc)
    if not queries:
        raise qloc.error("no queries to score")
    for qid in results:
        if qid not in queries:
            raise rloc.key(qid).error(f"no such query in {gt_name}")
    per_query = []
    for qid, query in queries.items():
        if qid not in results:
            raise rloc.error(f"missing query {qid!r} (every ground-truth query needs a prediction)")
        gframes, gfloc = get(as_dict(query, qloc.key(qid)), "frames", qloc.key(qid))
        pframes, pfloc = get(as_dict(results[qid], rloc.key(qid)), "frames", rloc.key(qid))
        per_query.append(_query_metrics(as_dict(gframes, gfloc), as_dict(pframes, pfloc), gfloc, pfloc))
    out: dict[str, float | int] = {k: float(np.mean([m[k] for m in per_query])) for k in KEYS}
    out["n_queries"] = len(per_query)
    return out


def _query_metrics(gt: Mapping[Any, Any], pred: Mapping[Any, Any], gloc: Loc, ploc: Loc) -> dict[str, float]:
    gt_regions = {str(f): to_region(v, gloc.key(str(f))) for f, v in gt.items()}
    pred_regions = {str(f): to_region(v, ploc.key(str(f))) for f, v in pred.items()}
    frames = sorted(gt_regions.keys() | pred_regions.keys())
    if not frames:
        raise gloc.error("no frames to score")
    iou = {f: _region_iou(gt_regions.get(f), pred_regions.get(f), ploc.key(f)) for f in frames}
    gold = {f for f in frames if gt_regions.get(f) is not None}
    predicted = {f for f in frames if pred_regions.get(f) is not None}
    return {
        "T_recall": 100.0 * (len(gold & predicted) / len(gold) if gold else 1.0),
        "IoU_all": 100.0 * _mean(iou[f] for f in frames),
        "IoU_gold": 100.0 * _mean(iou[f] for f in gold),
        "IoU_gold_pred": 100.0 * _mean(iou[f] for f in gold | predicted),
    }


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else 1.0


def _region_iou(a: Region, b: Region, loc: Loc) -> float:
    if a is None or b is None:
        return 1.0 if a is None and b is None else 0.0
    if isinstance(a, np.ndarray) != isinstance(b, np.ndarray):
        raise loc.error("one side is a box and the other a mask; give both as the same kind")
    if isinstance(a, np.ndarray):
        if a.shape != b.shape:
            raise loc.error(f"mask shape {b.shape} differs from the ground truth's {a.shape}")
        return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())
    return float(box_iou(np.array(a), np.array(b)))  # both boxes have a positive area


def to_region(value: Any, loc: Loc) -> Region:
    """A validated region: a non-empty box tuple, a non-empty bool mask, or None for empty."""
    if value is None:
        return None
    if isinstance(value, dict):
        return _nonempty_mask(decode_rle(value, loc))
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return _nonempty_mask(value.astype(bool))
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise loc.error(
            f"expected a box [x1, y1, x2, y2], a 0/1 mask, an RLE object or null, got {value!r:.40}"
        )
    seq = list(value)
    if not seq:
        return None
    if len(seq) == 4 and not any(isinstance(v, (list, tuple, np.ndarray)) for v in seq):
        x1, y1, x2, y2 = (
            as_number(float(v) if isinstance(v, np.number) else v, loc.index(i)) for i, v in enumerate(seq)
        )
        if x2 < x1 or y2 < y1:
            raise loc.error(f"box corners out of order [{x1:g}, {y1:g}, {x2:g}, {y2:g}]")
        return (x1, y1, x2, y2) if (x2 - x1) * (y2 - y1) > 0 else None
    try:
        mask = np.asarray(seq)
    except ValueError:  # ragged rows
        raise loc.error("a mask must be a rectangular list of rows") from None
    if mask.ndim != 2 or not (mask.dtype == bool or np.issubdtype(mask.dtype, np.integer)):
        raise loc.error("expected a box [x1, y1, x2, y2], a 2-D 0/1 mask, an RLE object or null")
    if not np.isin(mask, (0, 1)).all():
        raise loc.error("mask values must be 0/1 or true/false")
    return _nonempty_mask(mask.astype(bool))


def _nonempty_mask(mask: np.ndarray) -> np.ndarray | None:
    return mask if mask.any() else None


# ---- EgoMask's own layout ---------------------------------------------------------------------------

# IoU_all is EgoMask's J; F is the boundary F-measure of DAVIS (boundary pixels matched within 0.8% of
# the image diagonal), J&F their mean; presence_* score the frames where the object is predicted at all.
EGOMASK_KEYS = (*KEYS, "F", "J&F", "presence_P", "presence_R", "presence_F1")
BOUNDARY_FRACTION = 0.008


def egomask_metrics(gt_dir: str | Path, pred_dir: str | Path) -> dict[str, Any]:
    """EgoMask's metrics (percent) of a prediction folder against a ground-truth folder, both in
    EgoMask's layout (egovlp.metrics.egomask): the mean over expressions, overall and per subset.

    Every frame the ground truth lists for a video is scored. A missing prediction file predicts nothing
    (its expression scores 0 wherever the object is present) and is counted in `missing_predictions`.
    """
    expressions = read_ground_truth(gt_dir)
    if not Path(pred_dir).is_dir():
        raise Loc(str(pred_dir)).error("not a folder (expected EgoMask predictions)")
    gt_cache: dict[tuple[str, str], dict[str, np.ndarray | None]] = {}
    per_exp: list[tuple[str, dict[str, float]]] = []
    missing = 0
    for e in expressions:
        key = (e.video, e.obj_id)
        if key not in gt_cache:
            gt_cache[key] = _gt_masks(gt_dir, e)
        gt = gt_cache[key]
        path = prediction_path(pred_dir, e)
        if path is None:
            missing += 1
            pred: dict[str, np.ndarray | None] = {}
        else:
            pred = _pred_masks(path, e)
        per_exp.append((e.subset, _expression_metrics(e.frames, gt, pred, Loc(str(path or pred_dir)))))
    out: dict[str, Any] = _mean_metrics([m for _, m in per_exp])
    out["missing_predictions"] = missing
    out["subsets"] = {
        s: _mean_metrics([m for sub, m in per_exp if sub == s])
        for s in SUBSETS
        if any(sub == s for sub, _ in per_exp)
    }
    return out


def _mean_metrics(rows: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in EGOMASK_KEYS}
    out["n_expressions"] = len(rows)
    return out


def _gt_masks(root: str | Path, e: Expression) -> dict[str, np.ndarray | None]:
    raw = read_annotation(root, e.video, e.obj_id)
    loc = Loc(str(Path(root) / "annotations" / e.video / f"{e.obj_id}.json"))
    out = {f: _nonempty_mask(decode_rle(v, loc.key(f))) if v is not None else None for f, v in raw.items()}
    shapes = {m.shape for m in out.values() if m is not None}
    if len(shapes) > 1:
        raise loc.error(f"masks of several sizes {sorted(shapes)}")
    return out


def _pred_masks(path: Path, e: Expression) -> dict[str, np.ndarray | None]:
    loc = Loc(str(path))
    raw = as_dict(load_json(path), loc)
    frames = set(e.frames)
    out = {}
    for f, v in raw.items():
        if f not in frames:
            raise loc.key(f).error(f"not a frame of video {e.video!r}")
        out[f] = None if v is None else _nonempty_mask(decode_rle(v, loc.key(f)))
    return out


def _expression_metrics(
    frames: tuple[str, ...], gt: dict[str, np.ndarray | None], pred: dict[str, np.ndarray | None], ploc: Loc
) -> dict[str, float]:
    ious, fs = {}, {}
    for f in frames:
        g, p = gt.get(f), pred.get(f)
        if g is not None and p is not None and g.shape != p.shape:
            raise ploc.key(f).error(
                f"mask size {list(p.shape)} differs from the ground truth's {list(g.shape)}"
            )
        ious[f] = _region_iou(g, p, ploc.key(f))
        fs[f] = _boundary_f(g, p)
    gold = {f for f in frames if gt.get(f) is not None}
    predicted = {f for f in frames if pred.get(f) is not None}
    hit = len(gold & predicted)
    recall = hit / len(gold) if gold else 1.0
    precision = hit / len(predicted) if predicted else (0.0 if gold else 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    j, boundary = _mean(ious.values()), _mean(fs.values())
    return {
        "T_recall": 100.0 * recall,
        "IoU_all": 100.0 * j,
        "IoU_gold": 100.0 * _mean(ious[f] for f in gold),
        "IoU_gold_pred": 100.0 * _mean(ious[f] for f in gold | predicted),
        "F": 100.0 * boundary,
        "J&F": 100.0 * (j + boundary) / 2,
        "presence_P": 100.0 * precision,
        "presence_R": 100.0 * recall,
        "presence_F1": 100.0 * f1,
    }


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (the frame's edge counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disk of `radius` pixels."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                out |= padded[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
    return out


def _boundary_f(gt: np.ndarray | None, pred: np.ndarray | None) -> float:
    if gt is None or pred is None:
        return 1.0 if gt is None and pred is None else 0.0
    radius = max(1, math.ceil(BOUNDARY_FRACTION * math.hypot(*gt.shape)))
    gb, pb = _boundary(gt), _boundary(pred)
    precision = float((pb & _dilate(gb, radius)).sum() / pb.sum())
    recall = float((gb & _dilate(pb, radius)).sum() / gb.sum())
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0

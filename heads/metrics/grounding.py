"""Spatio-temporal grounding metrics of EgoMask (DESIGN.md C.6), per query and over a file of queries.

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

from collections.abc import Mapping
from typing import Any

import numpy as np

from heads.iou import box_iou
from heads.metrics.io import Loc, as_dict, as_int, as_list, as_number, get

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


def decode_rle(rle: dict, loc: Loc) -> np.ndarray:
    """COCO run-length encoding (column-major runs, starting with 0s; counts as a list or a COCO string)."""
    size, sloc = get(rle, "size", loc)
    size = as_list(size, sloc)
    if len(size) != 2:
        raise sloc.error("expected [height, width]")
    h, w = as_int(size[0], sloc.index(0)), as_int(size[1], sloc.index(1))
    counts, cloc = get(rle, "counts", loc)
    if isinstance(counts, str):
        runs = _coco_string_counts(counts, cloc)
    else:
        runs = [as_int(c, cloc.index(i)) for i, c in enumerate(as_list(counts, cloc))]
    if any(r < 0 for r in runs) or sum(runs) != h * w:
        raise cloc.error(f"runs must be non-negative and sum to height x width = {h * w}")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)  # odd runs are foreground
    return flat.reshape((w, h)).T  # column-major: [H, W]


def _coco_string_counts(text: str, loc: Loc) -> list[int]:
    """Decode COCO's compact counts string: 5-bit groups, 0x20 = more groups, sign-extended, delta from run-2."""
    runs: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise loc.error("truncated compressed RLE string")
            c = ord(text[pos]) - 48
            if not 0 <= c < 64:
                raise loc.error(f"invalid character {text[pos]!r} in compressed RLE string")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value -= 1 << shift  # sign bit of the last group
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs

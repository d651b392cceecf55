"""Ego4D FHO state-change metrics (docs/design.md C.7): OSCC accuracy and PNR temporal localization error.

- OSCC: a prediction `{"unique_id", "state_change": bool}` for every ground-truth clip; accuracy is the
  percentage of clips whose flag matches.
- PNR: a prediction `{"unique_id", "pnr_frame": number}` (a parent-video frame, e.g. an index mapped
  with `egovlp.formats.fho.pnr_index_to_frame`) for every clip with a state change; the error is the
  mean over those clips of |pnr_frame - parent_pnr_frame| / fps in seconds, with the clip's
  fps = (parent_end_frame - parent_start_frame + 1) / (parent_end_sec - parent_start_sec). Predictions
  for clips without a state change are accepted and ignored (their `pnr_frame` may be null).

A prediction file is a JSON list. A missing, duplicated or unknown `unique_id` is an InputError naming
the file and the entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from egovlp.formats.fho import FHOClip, parse_fho
from egovlp.metrics.io import Loc, as_dict, as_list, as_number, as_str, get


def _by_id(
    pred: Any, source: str, clips: dict[str, FHOClip], gt_name: str, read: Callable[[Any, Loc, FHOClip], Any]
) -> dict[str, Any]:
    """unique_id -> the value `read` takes from each entry; unknown and duplicate ids are errors."""
    root = Loc(source)
    out: dict[str, Any] = {}
    where: dict[str, str] = {}
    for i, entry in enumerate(as_list(pred, root)):
        loc = root.index(i)
        uid = as_str(*get(as_dict(entry, loc), "unique_id", loc))
        if uid not in clips:
            raise loc.key("unique_id").error(f"{uid!r} is not a clip of {gt_name}")
        if uid in out:
            raise loc.key("unique_id").error(f"{uid!r} was already predicted at {where[uid]}")
        out[uid], where[uid] = read(entry, loc, clips[uid]), loc.path
    return out


def _missing(wanted: list[str], got: dict[str, Any], source: str, what: str) -> None:
    missing = [uid for uid in wanted if uid not in got]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise Loc(source).error(f"no prediction for {what} {missing[0]!r}{more}")


def _state_change(entry: dict, loc: Loc, _clip: FHOClip) -> bool:
    value, vloc = get(entry, "state_change", loc)
    if not isinstance(value, bool):
        raise vloc.error(f"expected true/false, got {value!r:.40}")
    return value


def _pnr_frame(entry: dict, loc: Loc, clip: FHOClip) -> float | None:
    value, vloc = get(entry, "pnr_frame", loc)
    if value is None and not clip.state_change:
        return None  # not scored
    return as_number(value, vloc)


def oscc_metrics(
    gt: Any, pred: Any, *, gt_name: str = "ground truth", pred_name: str = "predictions"
) -> dict[str, float | int]:
    """OSCC accuracy (percent) over every clip of an `fho_oscc-pnr_val.json`-style ground truth."""
    clips = {c.unique_id: c for c in parse_fho(gt, gt_name)}
    flags = _by_id(pred, pred_name, clips, gt_name, _state_change)
    _missing(list(clips), flags, pred_name, "clip")
    correct = sum(flags[uid] == clip.state_change for uid, clip in clips.items())
    return {"accuracy": 100.0 * correct / len(clips), "n": len(clips)}


def pnr_metrics(
    gt: Any, pred: Any, *, gt_name: str = "ground truth", pred_name: str = "predictions"
) -> dict[str, float | int]:
    """Mean absolute PNR error in seconds over the clips with a state change."""
    clips = {c.unique_id: c for c in parse_fho(gt, gt_name)}
    positives = [uid for uid, clip in clips.items() if clip.state_change]
    if not positives:
        raise Loc(gt_name).error("no clips with a state change to score")
    frames = _by_id(pred, pred_name, clips, gt_name, _pnr_frame)
    _missing(positives, frames, pred_name, "the state-change clip")
    errors = [abs(frames[uid] - clips[uid].parent_pnr_frame) / clips[uid].fps for uid in positives]
    return {"error_sec": sum(errors) / len(errors), "n": len(errors)}

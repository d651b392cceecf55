"""Read and validate the Ego4D ground-truth and prediction files that the metrics score.

Every problem with a file's content becomes one `InputError` that names the file and the JSON path of
the offending value (``nlq_pred.json: results[3].predicted_times[0]: ...``), so a user can fix the file
without reading a traceback. The parsers turn the nested Ego4D layouts (docs/design.md C.1-C.4) into flat
records that the metric modules score; they take parsed JSON, so the Python API and the CLI validate
the same way.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egovlp.errors import InputError
from egovlp.formats.ego4d import VQQuerySet, parse_moments, parse_nlq
from egovlp.formats.ego4d import parse_vq2d as parse_vq2d_annotations

Window = tuple[float, float]
Box = tuple[float, float, float, float]  # x1, y1, x2, y2

NLQ_CHALLENGE = "ego4d_nlq_challenge"
MQ_CHALLENGE = "ego4d_moment_queries"
VQ2D_CHALLENGE = "ego4d_vq2d_challenge"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Loc:
    """Where a value sits: the file (or a label such as "ground truth") and its JSON path."""

    source: str
    path: str = ""

    def key(self, name: str) -> Loc:
        step = f".{name}" if _IDENT.match(name) else f"[{json.dumps(name)}]"
        return Loc(self.source, f"{self.path}{step}" if self.path else step.lstrip("."))

    def index(self, i: int) -> Loc:
        return Loc(self.source, f"{self.path}[{i}]")

    def error(self, message: str) -> InputError:
        return InputError(f"{self.source}: {self.path or 'top level'}: {message}")


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file raises InputError naming it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        with path.open("r", encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None


# ---- typed accessors: each returns the value or raises at its location -----------------------------


def as_dict(value: Any, loc: Loc) -> dict:
    if not isinstance(value, dict):
        raise loc.error(f"expected an object, got {_kind(value)}")
    return value


def as_list(value: Any, loc: Loc) -> list:
    if not isinstance(value, list):
        raise loc.error(f"expected a list, got {_kind(value)}")
    return value


def as_str(value: Any, loc: Loc) -> str:
    if not isinstance(value, str) or not value:
        raise loc.error(f"expected a non-empty string, got {_kind(value)}")
    return value


def as_int(value: Any, loc: Loc) -> int:
    # bool is an int subclass in Python; true/false is never a valid index or frame number
    if isinstance(value, bool) or not isinstance(value, int):
        raise loc.error(f"expected an integer, got {_kind(value)}")
    return value


def as_number(value: Any, loc: Loc) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise loc.error(f"expected a finite number, got {_kind(value)}")
    return float(value)


def as_window(value: Any, loc: Loc) -> Window:
    pair = as_list(value, loc)
    if len(pair) != 2:
        raise loc.error(f"expected [start, end], got a list of {len(pair)}")
    start, end = as_number(pair[0], loc.index(0)), as_number(pair[1], loc.index(1))
    if end < start:
        raise loc.error(f"end {end:g} is before start {start:g}")
    return start, end


def get(obj: dict, name: str, loc: Loc) -> tuple[Any, Loc]:
    """The value of a required key and its location."""
    if name not in obj:
        raise loc.error(f"missing key {name!r}")
    return obj[name], loc.key(name)


def items(obj: dict, name: str, loc: Loc) -> list[tuple[Any, Loc]]:
    """The elements of a required list-valued key, each with its location."""
    values, where = get(obj, name, loc)
    return [(v, where.index(i)) for i, v in enumerate(as_list(values, where))]


def check_challenge(pred: dict, expected: str, loc: Loc) -> None:
    """A prediction file may omit `challenge`; if present it must name the task being scored."""
    if "challenge" in pred and pred["challenge"] != expected:
        raise loc.key("challenge").error(f"expected {expected!r}, got {pred['challenge']!r}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


# ---- NLQ (docs/design.md C.1) --------------------------------------------------------------------------

NlqKey = tuple[str, str, int]  # clip_uid, annotation_uid, query_idx


@dataclass
class NlqGroundTruth:
    # every language query by key; None where a query without text also lacks a usable window
    windows: dict[NlqKey, Window | None]
    total: int  # every language query, with or without `query` text


@dataclass
class NlqPrediction:
    key: NlqKey
    windows: list[Window]  # ranked
    loc: Loc


def parse_nlq_ground_truth(gt: Any, source: str) -> NlqGroundTruth:
    """Every language query by key, read by the shared Ego4D reader (`egovlp.formats.ego4d`). A query
    with text must carry its window; one without text and without a window is counted, unscored."""
    windows: dict[NlqKey, Window | None] = {}
    for clip in parse_nlq(gt, source, require_video_uid=False):
        for q in clip.queries:
            key = (clip.clip_uid, q.annotation_uid, q.query_idx)
            if key in windows:
                raise InputError(
                    f"{source}: duplicate annotation {q.annotation_uid!r} in clip {clip.clip_uid!r}"
                )
            if q.start is None or q.end is None:
                if q.has_query or (q.start is None) != (q.end is None):
                    missing = "clip_start_sec" if q.start is None else "clip_end_sec"
                    raise InputError(
                        f"{source}: clip {clip.clip_uid!r} annotation {q.annotation_uid!r} "
                        f"language_queries[{q.query_idx}]: missing {missing!r}"
                    )
                windows[key] = None  # skipped query without text (docs/design.md C.1)
                continue
            windows[key] = (q.start, q.end)
    return NlqGroundTruth(windows=windows, total=len(windows))


def parse_nlq_predictions(pred: Any, source: str) -> list[NlqPrediction]:
    root = Loc(source)
    check_challenge(as_dict(pred, root), NLQ_CHALLENGE, root)
    out: list[NlqPrediction] = []
    for entry, eloc in items(pred, "results", root):
        entry = as_dict(entry, eloc)
        key = (
            as_str(*get(entry, "clip_uid", eloc)),
            as_str(*get(entry, "annotation_uid", eloc)),
            as_int(*get(entry, "query_idx", eloc)),
        )
        ranked = [as_window(w, wloc) for w, wloc in items(entry, "predicted_times", eloc)]
        out.append(NlqPrediction(key=key, windows=ranked, loc=eloc))
    return out


# ---- MQ (docs/design.md C.3) ---------------------------------------------------------------------------


@dataclass
class MqInstance:
    clip_uid: str
    label: str
    start: float
    end: float
    score: float = 0.0  # predictions only


def parse_mq_ground_truth(gt: Any, source: str) -> list[MqInstance]:
    """Every `primary` label of every annotator (a label without the field counts as primary), read
    by the shared Ego4D reader (`egovlp.formats.ego4d`)."""
    out: list[MqInstance] = []
    seen: set[str] = set()
    for clip in parse_moments(gt, source, require_video_uid=False):
        if clip.clip_uid in seen:
            raise InputError(f"{source}: clip {clip.clip_uid!r} appears twice")
        seen.add(clip.clip_uid)
        out.extend(
            MqInstance(clip.clip_uid, lab.label, lab.start, lab.end) for lab in clip.labels if lab.primary
        )
    return out


def parse_mq_predictions(pred: Any, source: str) -> list[MqInstance]:
    """Detections in file order (clips in key order, then list order): the order that breaks score ties."""
    root = Loc(source)
    check_challenge(as_dict(pred, root), MQ_CHALLENGE, root)
    # `detect_results` is the Ego4D name; `results` is the ActivityNet one, accepted as a fallback
    name = "detect_results" if "detect_results" in pred or "results" not in pred else "results"
    results, rloc = get(pred, name, root)
    out: list[MqInstance] = []
    for clip_uid, dets in as_dict(results, rloc).items():
        cloc = rloc.key(clip_uid)
        for det, dloc in [(d, cloc.index(i)) for i, d in enumerate(as_list(dets, cloc))]:
            det = as_dict(det, dloc)
            start, end = as_window(*get(det, "segment", dloc))
            score = as_number(*get(det, "score", dloc))
            out.append(MqInstance(clip_uid, as_str(*get(det, "label", dloc)), start, end, score))
    return out


# ---- VQ2D (docs/design.md C.4) -------------------------------------------------------------------------


@dataclass
class Vq2dItem:
    """One valid query set: its ground-truth track and the single predicted track scored against it."""

    name: str  # clip_uid/annotation index/query set id, for logs
    gt: dict[int, Box]  # frame number -> box
    pred: dict[int, Box] = field(default_factory=dict)  # empty: nothing predicted
    score: float | None = None


def _pred_box(value: Any, loc: Loc) -> tuple[int, Box]:
    box = as_dict(value, loc)
    fno = as_int(*get(box, "fno", loc))
    x1, y1, x2, y2 = (as_number(*get(box, k, loc)) for k in ("x1", "y1", "x2", "y2"))
    if x2 < x1 or y2 < y1:
        raise loc.error(f"box corners out of order (x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g})")
    return fno, (x1, y1, x2, y2)


def _track(boxes: list[tuple[Any, Loc]], parse) -> dict[int, Box]:
    track: dict[int, Box] = {}
    for value, loc in boxes:
        fno, box = parse(value, loc)
        if fno in track:
            raise loc.error(f"frame {fno} has more than one box")
        track[fno] = box
    return track


def _gt_track(qs: VQQuerySet, loc: Loc) -> dict[int, Box]:
    """A validated ground-truth response track (x, y, width, height) -> frame -> (x1, y1, x2, y2)."""
    boxes = [(b, loc.key("response_track").index(i)) for i, b in enumerate(qs.response_track)]
    return _track(boxes, lambda b, _loc: (b.frame_number, (b.x, b.y, b.x + b.width, b.y + b.height)))


def _aligned(gt_list: list, pred_list: list, what: str, loc: Loc) -> None:
    if len(pred_list) != len(gt_list):
        raise loc.error(f"{len(pred_list)} {what}, the ground truth has {len(gt_list)} (same order required)")


def parse_vq2d(gt: Any, pred: Any, gt_source: str, pred_source: str) -> list[Vq2dItem]:
    """Pair each valid ground-truth query set with its prediction; predictions follow the GT order.

    The ground truth goes through `egovlp.formats.ego4d.parse_vq2d`, the validation that extract and
    the heads use (a valid query set needs a query_frame, a visual_crop with numeric sizes and a
    non-empty response track)."""
    clips = {(c.video_idx, c.clip_idx): c for c in parse_vq2d_annotations(gt, gt_source)}
    groot, proot = Loc(gt_source), Loc(pred_source)
    pred = as_dict(pred, proot)
    check_challenge(pred, VQ2D_CHALLENGE, proot)
    if "version" in gt and "version" in pred and gt["version"] != pred["version"]:
        raise proot.key("version").error(
            f"{pred['version']!r} does not match the ground truth's {gt['version']!r}"
        )
    results, rloc = get(pred, "results", proot)
    gvideos = items(gt, "videos", groot)
    pvideos = items(as_dict(results, rloc), "videos", rloc)
    _aligned(gvideos, pvideos, "videos", rloc.key("videos"))
    out: list[Vq2dItem] = []
    for vi, ((gv, gvloc), (pv, pvloc)) in enumerate(zip(gvideos, pvideos, strict=True)):
        _same_uid(as_dict(gv, gvloc), as_dict(pv, pvloc), "video_uid", gvloc, pvloc)
        gclips, pclips = items(gv, "clips", gvloc), items(pv, "clips", pvloc)
        _aligned(gclips, pclips, "clips", pvloc.key("clips"))
        for ci, ((gc, gcloc), (pc, pcloc)) in enumerate(zip(gclips, pclips, strict=True)):
            clip = clips[(vi, ci)]
            _same_uid(as_dict(gc, gcloc), as_dict(pc, pcloc), "clip_uid", gcloc, pcloc)
            panns = items(pc, "predictions", pcloc)
            _aligned([None] * clip.num_annotations, panns, "predictions", pcloc.key("predictions"))
            sets = {(qs.annotation_idx, qs.query_set_id): qs for qs in clip.query_sets}
            for a, (pa, paloc) in enumerate(panns):
                galoc = gcloc.key("annotations").index(a)
                psets, psloc = get(as_dict(pa, paloc), "query_sets", paloc)
                psets = as_dict(psets, psloc)
                for qid in psets:
                    if (a, qid) not in sets:
                        raise psloc.key(qid).error("no such query set in the ground truth")
                for qid in gt["videos"][vi]["clips"][ci]["annotations"][a].get("query_sets", {}):
                    qs = sets[(a, str(qid))]
                    if not qs.is_valid:  # invalid query sets are not scored
                        continue
                    if qid not in psets:
                        raise psloc.error(f"missing query set {qid!r}, which is valid in the ground truth")
                    gt_track = _gt_track(qs, galoc.key("query_sets").key(qid))
                    name = f"{clip.clip_uid}/{a}/{qid}"
                    out.append(_vq2d_item(name, gt_track, psets[qid], psloc.key(qid)))
    if not out:
        raise groot.error("no valid query sets to score")
    return out


def _same_uid(g: dict, p: dict, name: str, gloc: Loc, ploc: Loc) -> str:
    expected = as_str(*get(g, name, gloc))
    found = as_str(*get(p, name, ploc))
    if found != expected:
        raise ploc.key(name).error(f"expected {expected!r} (predictions must follow the ground-truth order)")
    return expected


def _vq2d_item(name: str, gt: dict[int, Box], pq: Any, pqloc: Loc) -> Vq2dItem:
    pq = as_dict(pq, pqloc)
    pred = _track(items(pq, "bboxes", pqloc), _pred_box)
    score_value, sloc = get(pq, "score", pqloc)
    # an empty track predicts nothing, so its score may be null; a real track must be ranked
    score = None if (not pred and score_value is None) else as_number(score_value, sloc)
    return Vq2dItem(name=name, gt=gt, pred=pred, score=score)

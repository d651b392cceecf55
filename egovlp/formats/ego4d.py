"""Ego4D episodic-memory annotation files (docs/design.md C.1, C.3, C.4) -> flat, typed records.

- NLQ (`nlq_*.json`): videos[] -> clips[] -> annotations[] -> language_queries[]; one `NLQQuery` per
  language query, keyed (clip_uid, annotation_uid, query_idx) as the prediction file is. Queries
  without a `query` text are kept with query=None (`has_query` False) so callers skip but count them.
- MQ (`moments_*.json`): videos[] -> clips[] -> annotations[] -> labels[]; all annotators' labels are
  kept, each with its `primary` flag.
- VQ2D (`vq_*.json`): videos[] -> clips[] -> annotations[] -> query_sets {"1": ...}; each query set
  records its annotation index and id so predictions can be written back in ground-truth order.

Anything malformed raises InputError naming the file and the JSON path, e.g.
`nlq_val.json: videos[3].clips[0].annotations[1]: missing 'language_queries'`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egovlp.errors import InputError
from egovlp.formats import read_json, write_json_atomic

__all__ = [
    "NLQClip",
    "NLQQuery",
    "MQClip",
    "MQLabel",
    "VQBox",
    "VQQuerySet",
    "VQClip",
    "read_json",
    "read_nlq",
    "read_moments",
    "parse_nlq",
    "parse_moments",
    "read_vq2d",
    "parse_vq2d",
    "write_json_atomic",
]


# --------------------------------------------------------------------------------------------
# records


@dataclass
class NLQQuery:
    annotation_uid: str
    query_idx: int  # position in the annotation's language_queries (the prediction key)
    query: str | None  # None when the file has no query text: skip it, but count it
    template: str | None
    start: float | None  # clip-relative ground-truth window (None in unannotated test files)
    end: float | None

    @property
    def has_query(self) -> bool:
        return self.query is not None


@dataclass
class AnnotatedClip:
    """Where a clip sits in its video (seconds; any may be missing in a release)."""

    video_uid: str
    clip_uid: str
    video_start_sec: float | None
    video_end_sec: float | None
    clip_start_sec: float | None
    clip_end_sec: float | None


@dataclass
class NLQClip(AnnotatedClip):
    queries: list[NLQQuery] = field(default_factory=list)


@dataclass
class MQLabel:
    start: float  # clip-relative seconds
    end: float
    label: str
    primary: bool
    annotator_uid: str | None = None


@dataclass
class MQClip(AnnotatedClip):
    labels: list[MQLabel] = field(default_factory=list)


@dataclass
class VQBox:
    frame_number: int  # 5 fps clip frame index
    x: float
    y: float
    width: float
    height: float
    original_width: int | None = None
    original_height: int | None = None


@dataclass
class VQQuerySet:
    annotation_idx: int  # index in the clip's annotations (= its predictions list)
    query_set_id: str  # "1", "2", ...
    is_valid: bool
    query_frame: int | None
    object_title: str | None
    visual_crop: VQBox | None
    response_track: list[VQBox] = field(default_factory=list)


@dataclass
class VQClip:
    video_uid: str
    clip_uid: str
    clip_fps: float
    video_start_sec: float | None
    video_end_sec: float | None
    video_idx: int  # position of the video in the file
    clip_idx: int  # position of the clip in its video
    num_annotations: int
    query_sets: list[VQQuerySet] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# typed access with JSON-path errors


class _Doc:
    """Typed getters that name the file and JSON path in every error."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, what: str) -> InputError:
        return InputError(f"{self.path}: {where}: {what}" if where else f"{self.path}: {what}")

    def obj(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {type(value).__name__}")
        return value

    def get_list(self, parent: dict, key: str, where: str, required: bool = True) -> list:
        if key not in parent:
            if required:
                raise self.fail(where, f"missing '{key}'")
            return []
        value = parent[key]
        if not isinstance(value, list):
            raise self.fail(
                f"{where}.{key}" if where else key, f"expected a list, got {type(value).__name__}"
            )
        return value

    def present(self, parent: dict, key: str, where: str, required: bool) -> Any:
        """parent[key]; a missing (or null) value is None, or an error when `required`."""
        value = parent.get(key)
        if value is None and required:
            raise self.fail(where, f"missing '{key}'")
        return value

    def get_str(self, parent: dict, key: str, where: str, required: bool = True) -> str | None:
        value = self.present(parent, key, where, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"expected a string, got {value!r}")
        return value

    def get_num(self, parent: dict, key: str, where: str, required: bool = True) -> float | None:
        value = self.present(parent, key, where, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(f"{where}.{key}", f"expected a number, got {value!r}")
        return float(value)

    def get_int(self, parent: dict, key: str, where: str, required: bool = True) -> int | None:
        value = self.get_num(parent, key, where, required)
        if value is None:
            return None
        if not value.is_integer():
            raise self.fail(f"{where}.{key}", f"expected an integer, got {parent[key]!r}")
        return int(value)


def _clips(doc: _Doc, data: Any):
    """Yield (video_idx, clip_idx, video, clip, where) over videos[] -> clips[]."""
    root = doc.obj(data, "")
    for vi, video in enumerate(doc.get_list(root, "videos", "")):
        vwhere = f"videos[{vi}]"
        video = doc.obj(video, vwhere)
        for ci, clip in enumerate(doc.get_list(video, "clips", vwhere)):
            cwhere = f"{vwhere}.clips[{ci}]"
            yield vi, ci, video, doc.obj(clip, cwhere), cwhere


def _clip_times(doc: _Doc, clip: dict, where: str) -> dict[str, float | None]:
    names = ("video_start_sec", "video_end_sec", "clip_start_sec", "clip_end_sec")
    return {name: doc.get_num(clip, name, where, required=False) for name in names}


def _video_uid(doc: _Doc, video: dict, clip: dict, where: str, required: bool = True) -> str:
    # the uid lives on the video; some releases repeat it on the clip
    uid = clip.get("video_uid", video.get("video_uid"))
    if uid is None and not required:
        return ""  # scoring needs only clip uids; reading frames needs the video
    if not isinstance(uid, str) or not uid:
        raise doc.fail(where, "missing 'video_uid' (on the clip or its video)")
    return uid


# --------------------------------------------------------------------------------------------
# readers


def _parse_annotated_clips(
    data: Any, source: str | os.PathLike, record_type, item_key: str, add_item, require_video_uid: bool
) -> list:
    """videos[] -> clips[] -> annotations[] -> `item_key`[]: one record per clip, in file order;
    `add_item(doc, record, ann, awhere, index, item, where)` checks one item and adds it to the record."""
    doc = _Doc(Path(source))
    out = []
    for _vi, _ci, video, clip, where in _clips(doc, data):
        record = record_type(
            video_uid=_video_uid(doc, video, clip, where, require_video_uid),
            clip_uid=doc.get_str(clip, "clip_uid", where),
            **_clip_times(doc, clip, where),
        )
        for ai, ann in enumerate(doc.get_list(clip, "annotations", where, required=False)):
            awhere = f"{where}.annotations[{ai}]"
            ann = doc.obj(ann, awhere)
            for ii, item in enumerate(doc.get_list(ann, item_key, awhere)):
                iwhere = f"{awhere}.{item_key}[{ii}]"
                add_item(doc, record, ann, awhere, ii, doc.obj(item, iwhere), iwhere)
        out.append(record)
    return out


def _add_query(doc: _Doc, record: NLQClip, ann: dict, awhere: str, qi: int, q: dict, where: str) -> None:
    text = q.get("query")
    text = text.strip() if isinstance(text, str) and text.strip() else None
    start = doc.get_num(q, "clip_start_sec", where, required=False)
    end = doc.get_num(q, "clip_end_sec", where, required=False)
    if start is not None and end is not None and end < start:
        raise doc.fail(where, f"clip_end_sec {end:g} is before clip_start_sec {start:g}")
    template = q.get("template") if isinstance(q.get("template"), str) else None
    ann_uid = doc.get_str(ann, "annotation_uid", awhere)
    record.queries.append(NLQQuery(ann_uid, qi, text, template, start, end))


def _add_label(doc: _Doc, record: MQClip, ann: dict, awhere: str, li: int, lab: dict, where: str) -> None:
    start = doc.get_num(lab, "start_time", where)
    end = doc.get_num(lab, "end_time", where)
    if end < start:
        raise doc.fail(where, f"end_time {end:g} is before start_time {start:g}")
    primary = lab.get("primary", True)
    if not isinstance(primary, bool):
        raise doc.fail(f"{where}.primary", f"expected true/false, got {primary!r}")
    label = doc.get_str(lab, "label", where)
    annotator = ann.get("annotator_uid") if isinstance(ann.get("annotator_uid"), str) else None
    record.labels.append(MQLabel(start, end, label, primary, annotator))


def read_nlq(path: str | os.PathLike) -> list[NLQClip]:
    """NLQ annotation file -> clips with their language queries, in file order."""
    return parse_nlq(read_json(path), path)


def parse_nlq(data: Any, source: str | os.PathLike, require_video_uid: bool = True) -> list[NLQClip]:
    """The parsed JSON of an NLQ file -> clips; the one reader extract, the heads and `egovlp eval
    nlq` share (scoring passes require_video_uid=False: it needs clip uids only). Errors name
    `source` and the JSON path."""
    return _parse_annotated_clips(data, source, NLQClip, "language_queries", _add_query, require_video_uid)


def read_moments(path: str | os.PathLike) -> list[MQClip]:
    """Moment-query annotation file -> clips with every annotator's labels (primary flag kept)."""
    return parse_moments(read_json(path), path)


def parse_moments(data: Any, source: str | os.PathLike, require_video_uid: bool = True) -> list[MQClip]:
    """The parsed JSON of a moments file -> clips (shared like `parse_nlq`)."""
    return _parse_annotated_clips(data, source, MQClip, "labels", _add_label, require_video_uid)


def _box(doc: _Doc, raw: Any, where: str) -> VQBox:
    raw = doc.obj(raw, where)
    box = VQBox(
        frame_number=doc.get_int(raw, "frame_number", where),
        x=doc.get_num(raw, "x", where),
        y=doc.get_num(raw, "y", where),
        width=doc.get_num(raw, "width", where),
        height=doc.get_num(raw, "height", where),
        original_width=doc.get_int(raw, "original_width", where, required=False),
        original_height=doc.get_int(raw, "original_height", where, required=False),
    )
    if box.width < 0 or box.height < 0:
        raise doc.fail(where, f"negative box size {box.width} x {box.height}")
    return box


def _query_set(doc: _Doc, ai: int, qid: str, raw: Any, where: str) -> VQQuerySet:
    raw = doc.obj(raw, where)
    is_valid = raw.get("is_valid", True)
    if not isinstance(is_valid, bool):
        raise doc.fail(f"{where}.is_valid", f"expected true/false, got {is_valid!r}")
    # invalid query sets in the real files often lack the other fields: keep them, unparsed
    required = is_valid
    crop = raw.get("visual_crop")
    track = doc.get_list(raw, "response_track", where, required=required)
    qs = VQQuerySet(
        annotation_idx=ai,
        query_set_id=qid,
        is_valid=is_valid,
        query_frame=doc.get_int(raw, "query_frame", where, required=required),
        object_title=doc.get_str(raw, "object_title", where, required=False),
        visual_crop=_box(doc, crop, f"{where}.visual_crop") if crop is not None else None,
        response_track=[_box(doc, b, f"{where}.response_track[{i}]") for i, b in enumerate(track)],
    )
    if is_valid and qs.visual_crop is None:
        raise doc.fail(where, "missing 'visual_crop'")
    if is_valid and not qs.response_track:
        raise doc.fail(f"{where}.response_track", "empty response track in a valid query set")
    return qs


def read_vq2d(path: str | os.PathLike) -> list[VQClip]:
    """VQ2D annotation file -> clips with their query sets (annotation index and id kept)."""
    return parse_vq2d(read_json(path), path)


def parse_vq2d(data: Any, source: str | os.PathLike) -> list[VQClip]:
    """The parsed JSON of a VQ2D annotation file -> clips; the one validation that extract, the heads
    and `egovlp eval vq2d` share (a valid query set needs a query_frame, a visual_crop with numeric
    sizes and a non-empty response track). Errors name `source` and the JSON path."""
    doc = _Doc(Path(source))
    out: list[VQClip] = []
    for vi, ci, video, clip, where in _clips(doc, data):
        anns = doc.get_list(clip, "annotations", where, required=False)
        fps = doc.get_num(clip, "clip_fps", where, required=False)
        record = VQClip(
            video_uid=_video_uid(doc, video, clip, where),
            clip_uid=doc.get_str(clip, "clip_uid", where),
            clip_fps=5.0 if fps is None else fps,
            video_start_sec=doc.get_num(clip, "video_start_sec", where, required=False),
            video_end_sec=doc.get_num(clip, "video_end_sec", where, required=False),
            video_idx=vi,
            clip_idx=ci,
            num_annotations=len(anns),
        )
        for ai, ann in enumerate(anns):
            awhere = f"{where}.annotations[{ai}]"
            ann = doc.obj(ann, awhere)
            sets = doc.obj(ann.get("query_sets", {}), f"{awhere}.query_sets")
            for qid in sorted(sets, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, str(k))):
                qwhere = f'{awhere}.query_sets["{qid}"]'
                record.query_sets.append(_query_set(doc, ai, str(qid), sets[qid], qwhere))
        out.append(record)
    return out

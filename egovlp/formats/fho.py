"""Ego4D FHO state-change annotations (`fho_oscc-pnr_{train,val}.json`, docs/design.md C.7) -> typed clips.

A file is `{"clips": [...]}`; each clip is an 8 s (or other) window of a parent video
`{video_uid}.mp4` with its frame range on the 30 fps grid (`parent_*`), the same window inside the
5-minute clip (`clip_*`), the state-change flag and, for a clip with a state change, the PNR frame.
Clips without a state change have null PNR fields.

The PNR task samples `num_frames` (16) frames over the window; a predicted index i maps back to the
parent frame `parent_start_frame + (parent_end_frame - parent_start_frame) / 16 * i` (the official
mapping, `pnr_index_to_frame`), and the training label is the index whose mapped frame is nearest the
PNR frame (`pnr_label`).

Anything malformed raises InputError naming the file and the JSON path, e.g.
`fho_val.json: clips[3]: missing 'parent_end_frame'`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egovlp.errors import InputError
from egovlp.formats.ego4d import _Doc, read_json

__all__ = ["PNR_FRAMES", "FHOClip", "read_fho", "parse_fho", "pnr_index_to_frame", "pnr_label"]

PNR_FRAMES = 16  # frames the official PNR task samples over a clip window


@dataclass(frozen=True)
class FHOClip:
    unique_id: str
    video_uid: str
    clip_uid: str
    clip_id: int | str
    parent_start_sec: float
    parent_end_sec: float
    parent_start_frame: int
    parent_end_frame: int
    clip_start_sec: float
    clip_end_sec: float
    clip_start_frame: int
    clip_end_frame: int
    parent_pnr_frame: int | None  # None when there is no state change
    clip_pnr_frame: int | None
    state_change: bool

    @property
    def fps(self) -> float:
        """The clip's frame rate as the PNR metric defines it (C.7)."""
        return (self.parent_end_frame - self.parent_start_frame + 1) / (
            self.parent_end_sec - self.parent_start_sec
        )

    @property
    def duration(self) -> float:
        return self.parent_end_sec - self.parent_start_sec


def pnr_index_to_frame(
    parent_start_frame: float, parent_end_frame: float, i: float, num_frames: int = PNR_FRAMES
) -> float:
    """Parent-video frame of sampled index `i` (the official mapping; not rounded)."""
    return parent_start_frame + (parent_end_frame - parent_start_frame) / num_frames * i


def pnr_label(clip: FHOClip, num_frames: int = PNR_FRAMES) -> int | None:
    """The sampled-frame index in 0..num_frames-1 nearest the PNR frame (ties: the lower index);
    None for a clip without a state change."""
    if not clip.state_change or clip.parent_pnr_frame is None:
        return None
    distances = [
        abs(
            pnr_index_to_frame(clip.parent_start_frame, clip.parent_end_frame, i, num_frames)
            - clip.parent_pnr_frame
        )
        for i in range(num_frames)
    ]
    return min(range(num_frames), key=distances.__getitem__)


_SECONDS = ("parent_start_sec", "parent_end_sec", "clip_start_sec", "clip_end_sec")
_FRAMES = ("parent_start_frame", "parent_end_frame", "clip_start_frame", "clip_end_frame")
_PNR_FRAMES = ("parent_pnr_frame", "clip_pnr_frame")


def _clip_id(doc: _Doc, raw: dict, where: str) -> int | str:
    value = raw.get("clip_id")
    if isinstance(value, str) and value:
        return value
    if value is None or isinstance(value, str):
        raise doc.fail(where, "missing 'clip_id'")
    return doc.get_int(raw, "clip_id", where)


def _clip(doc: _Doc, raw: Any, where: str) -> FHOClip:
    raw = doc.obj(raw, where)
    state = raw.get("state_change")
    if not isinstance(state, bool):
        raise doc.fail(f"{where}.state_change", f"expected true/false, got {state!r}")
    clip = FHOClip(
        **{name: doc.get_str(raw, name, where) for name in ("unique_id", "video_uid", "clip_uid")},
        clip_id=_clip_id(doc, raw, where),
        **{name: doc.get_num(raw, name, where) for name in _SECONDS},
        **{name: doc.get_int(raw, name, where) for name in _FRAMES},
        # required with a state change; a clip without one may carry null (the usual case)
        **{name: doc.get_int(raw, name, where, required=state) for name in _PNR_FRAMES},
        state_change=state,
    )
    if clip.parent_end_sec <= clip.parent_start_sec:
        raise doc.fail(where, f"parent_end_sec {clip.parent_end_sec:g} is not after parent_start_sec")
    if clip.parent_end_frame <= clip.parent_start_frame:
        raise doc.fail(where, f"parent_end_frame {clip.parent_end_frame} is not after parent_start_frame")
    if clip.clip_end_sec < clip.clip_start_sec or clip.clip_end_frame < clip.clip_start_frame:
        raise doc.fail(where, "clip_end_* is before clip_start_*")
    if state and not clip.parent_start_frame <= clip.parent_pnr_frame <= clip.parent_end_frame:
        raise doc.fail(
            f"{where}.parent_pnr_frame",
            f"{clip.parent_pnr_frame} is outside the window "
            f"[{clip.parent_start_frame}, {clip.parent_end_frame}]",
        )
    return clip


def read_fho(path: str | os.PathLike) -> list[FHOClip]:
    """An FHO OSCC/PNR annotation file -> its clips in file order (unique_id unique, validated)."""
    return parse_fho(read_json(path), path)


def parse_fho(data: Any, source: str | os.PathLike) -> list[FHOClip]:
    """The parsed JSON of an FHO annotation file -> its clips; errors name `source` and the JSON path."""
    doc = _Doc(Path(source))
    clips: list[FHOClip] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(doc.get_list(doc.obj(data, ""), "clips", "")):
        clip = _clip(doc, raw, f"clips[{i}]")
        if clip.unique_id in seen:
            raise doc.fail(
                f"clips[{i}].unique_id", f"{clip.unique_id!r} repeats clips[{seen[clip.unique_id]}]"
            )
        seen[clip.unique_id] = i
        clips.append(clip)
    if not clips:
        raise InputError(f"{source}: no clips")
    return clips

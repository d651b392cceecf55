"""What to extract: `--input` (a folder, a `.txt` list, or an Ego4D annotation file) -> work items,
one per output.

A work item names one output (`name`), the video file it reads (`source`) and the part of that file
to read (`start`, `end` in file seconds; `end=None` means to the end of the file). Annotation inputs
read `{root}/{video_uid}.mp4` from `video_start_sec` to `video_end_sec`, or, when that file is
missing, the clip file `{root}/{clip_uid}.mp4` from 0 to its length. An item whose video is missing
is kept (it becomes a `failed` manifest row) so that one missing file does not stop the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from egovlp.errors import InputError
from egovlp.formats.ego4d import read_json, read_moments, read_nlq, read_vq2d

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


@dataclass
class WorkItem:
    name: str  # output file stem: clip_uid, video_uid or the video file's stem
    source: str  # video path
    start: float = 0.0  # clip start in the file, seconds
    end: float | None = None  # clip end in the file, seconds (None: end of file)
    clip_uid: str | None = None
    video_uid: str | None = None
    error: str | None = None  # set when the input cannot be read at all (missing video)


def _annotation_kind(data: object) -> str | None:
    """Which Ego4D annotation a parsed JSON holds: nlq, mq, vq2d, or None."""
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        return None
    for video in data["videos"]:
        for clip in (video or {}).get("clips", []) or []:
            for ann in clip.get("annotations", []) or []:
                if "language_queries" in ann:
                    return "nlq"
                if "labels" in ann:
                    return "mq"
                if "query_sets" in ann:
                    return "vq2d"
    return "nlq"  # no annotations at all: any reader gives the clips


def _clip_item(root: Path, clip_uid: str, video_uid: str, start: float | None, end: float | None) -> WorkItem:
    whole = root / f"{video_uid}.mp4"
    clip_file = root / f"{clip_uid}.mp4"
    if whole.is_file():
        if start is None:
            start = 0.0
        return WorkItem(clip_uid, str(whole), start, end, clip_uid, video_uid)
    if clip_file.is_file():
        # a clip file starts at the clip's start; its length comes from the annotation when known
        duration = None if start is None or end is None else end - start
        return WorkItem(clip_uid, str(clip_file), 0.0, duration, clip_uid, video_uid)
    missing = f"{whole}: video file not found (nor clip file {clip_file})"
    return WorkItem(clip_uid, str(whole), start or 0.0, end, clip_uid, video_uid, error=missing)


def annotation_items(path: Path, root: Path, per_video: bool = False) -> list[WorkItem]:
    """Clips of an NLQ / MQ / VQ2D file -> items named by clip_uid (or whole videos by video_uid)."""
    kind = _annotation_kind(read_json(path))
    reader = {"nlq": read_nlq, "mq": read_moments, "vq2d": read_vq2d}.get(kind or "")
    if reader is None:
        raise InputError(f"{path}: not an Ego4D NLQ / MQ / VQ2D annotation file (no 'videos' list)")
    items: list[WorkItem] = []
    seen: set[str] = set()
    for clip in reader(path):
        if per_video:
            if clip.video_uid in seen:
                continue
            seen.add(clip.video_uid)
            source = root / f"{clip.video_uid}.mp4"
            error = None if source.is_file() else f"{source}: video file not found"
            items.append(WorkItem(clip.video_uid, str(source), video_uid=clip.video_uid, error=error))
            continue
        if clip.clip_uid in seen:
            continue
        seen.add(clip.clip_uid)
        items.append(
            _clip_item(root, clip.clip_uid, clip.video_uid, clip.video_start_sec, clip.video_end_sec)
        )
    return items


def _file_item(path: Path) -> WorkItem:
    return WorkItem(path.stem, str(path), video_uid=path.stem)


def resolve_inputs(input_path: str, video_root: str | None = None, per_video: bool = False) -> list[WorkItem]:
    """`--input` -> work items. Raises InputError for a missing input or a list naming nothing."""
    path = Path(input_path)
    if not path.exists():
        raise InputError(f"{path}: input not found")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise InputError(f"{path}: folder holds no video files ({', '.join(VIDEO_SUFFIXES)})")
        items = [_file_item(p) for p in files]
    elif path.suffix.lower() == ".json":
        root = Path(video_root) if video_root else path.parent / "videos"
        if not root.is_dir():
            raise InputError(f"{root}: video folder not found (pass --videos ROOT)")
        items = annotation_items(path, root, per_video)
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        items = [_file_item(path)]
    else:
        base = path.parent
        lines = path.read_text(encoding="utf-8").splitlines()
        items = []
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line) if os.path.isabs(line) else base / line
            items.append(_file_item(p))
            if not p.is_file():
                items[-1].error = f"{path}:{n}: video file not found: {p}"
        if not items:
            raise InputError(f"{path}: list file names no videos")
    names = [it.name for it in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{path}: several inputs map to the same output name: {', '.join(dupes[:5])}")
    return items

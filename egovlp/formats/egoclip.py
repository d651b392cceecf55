"""The EgoClip narration table (docs/design.md B.5): a tab-separated csv, one narrated clip per row.

Columns, in order: clip_idx, video_uid, video_dur, narration_source, narration_ind, narration_time,
clip_start, clip_end, clip_text, tag_verb, tag_noun. Tags are strings like "[93]" or
"[192, 115, 12]"; they are parsed by a strict pattern plus `json.loads`, never evaluated.
A scene segment (B.4) is a video's minute: `segment_id(video_uid, narration_time)`.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from egovlp.errors import InputError
from egovlp.formats import atomic_write

EGOCLIP_COLUMNS: tuple[str, ...] = (
    "clip_idx",
    "video_uid",
    "video_dur",
    "narration_source",
    "narration_ind",
    "narration_time",
    "clip_start",
    "clip_end",
    "clip_text",
    "tag_verb",
    "tag_noun",
)

SEGMENT_SECONDS = 60

_TAGS = re.compile(r"\[\s*(?:\d+\s*(?:,\s*\d+\s*)*)?\]")


@dataclass(slots=True)
class EgoClipRow:
    clip_idx: int
    video_uid: str
    video_dur: float
    narration_source: str
    narration_ind: int
    narration_time: float
    clip_start: float
    clip_end: float
    clip_text: str
    tag_verb: list[int] = field(default_factory=list)
    tag_noun: list[int] = field(default_factory=list)

    @property
    def segment(self) -> str:
        return segment_id(self.video_uid, self.narration_time)


assert tuple(f.name for f in fields(EgoClipRow)) == EGOCLIP_COLUMNS


def segment_id(video_uid: str, narration_time: float) -> str:
    """B.4 scene segment: the video's minute of the narration, e.g. "abc_3"."""
    return f"{video_uid}_{int(narration_time // SEGMENT_SECONDS)}"


def parse_tags(text: str) -> list[int]:
    """ "[192, 115, 12]" -> [192, 115, 12]; ValueError on anything that is not a list of ints."""
    text = text.strip()
    if not _TAGS.fullmatch(text):
        raise ValueError(f"{text!r} is not a list of integer tags like [3, 14]")
    return json.loads(text)


def format_tags(tags: Iterable[int]) -> str:
    """[192, 115, 12] -> "[192, 115, 12]" (the EgoClip spelling)."""
    return "[" + ", ".join(str(int(t)) for t in tags) + "]"


def _parse_int(text: str) -> int:
    # real EgoClip files sometimes spell integer columns as floats ("12.0")
    value = _parse_float(text)
    if not value.is_integer():
        raise ValueError(f"{text!r} is not an integer")
    return int(value)


def _parse_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if value != value:  # NaN: a missing time is an error, not a number
        raise ValueError(f"{text!r} is not a number")
    return value


_CONVERT = {
    "clip_idx": _parse_int,
    "video_dur": _parse_float,
    "narration_ind": _parse_int,
    "narration_time": _parse_float,
    "clip_start": _parse_float,
    "clip_end": _parse_float,
    "tag_verb": parse_tags,
    "tag_noun": parse_tags,
}


def iter_egoclip(path: str | os.PathLike) -> Iterator[EgoClipRow]:
    """Stream the rows of an EgoClip csv (the full file has 3.85M rows)."""
    path = Path(path)
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read EgoClip csv ({err.strerror})") from err
    with handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty file, expected an EgoClip header")
        header = [h.strip() for h in header]
        missing = [c for c in EGOCLIP_COLUMNS if c not in header]
        if missing:
            raise InputError(f"{path}: header lacks column(s) {', '.join(missing)} (is it tab separated?)")
        where = [header.index(c) for c in EGOCLIP_COLUMNS]
        # csv's own field limit (128 KiB) is far above any narration: a longer field means a broken file
        try:
            yield from _rows(path, reader, header, where)
        except csv.Error as err:
            raise InputError(f"{path}: line {reader.line_num}: {err}") from None


def _rows(path: Path, reader, header: list[str], where: list[int]) -> Iterator[EgoClipRow]:
    """The data rows after the header, converted; InputError names the row, line and column."""
    for row_no, cells in enumerate(reader, start=1):
        if not cells:
            continue  # a blank line
        line = reader.line_num
        if len(cells) != len(header):
            raise InputError(
                f"{path}: row {row_no} (line {line}): {len(cells)} fields, expected {len(header)}"
            )
        values = []
        for column, i in zip(EGOCLIP_COLUMNS, where, strict=True):
            try:
                conv = _CONVERT.get(column)
                values.append(conv(cells[i]) if conv else cells[i])
            except ValueError as err:
                raise InputError(f"{path}: row {row_no} (line {line}), column {column}: {err}") from None
        yield EgoClipRow(*values)


def read_egoclip(path: str | os.PathLike) -> list[EgoClipRow]:
    """All rows of an EgoClip csv; InputError names the file, row, line and column at fault."""
    return list(iter_egoclip(path))


def _format_float(value: float) -> str:
    return repr(float(value))


def write_egoclip(rows: Iterable[EgoClipRow], path: str | os.PathLike) -> None:
    """Write rows in exactly the EgoClip layout (header, tabs, tags as "[1, 2]"), atomically."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(EGOCLIP_COLUMNS)
        for row in rows:
            writer.writerow(
                [
                    int(row.clip_idx),
                    row.video_uid,
                    _format_float(row.video_dur),
                    row.narration_source,
                    int(row.narration_ind),
                    _format_float(row.narration_time),
                    _format_float(row.clip_start),
                    _format_float(row.clip_end),
                    row.clip_text,
                    format_tags(row.tag_verb),
                    format_tags(row.tag_noun),
                ]
            )

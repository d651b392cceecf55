"""The EgoMCQ benchmark file (docs/design.md B.5): multiple-choice text -> video questions.

Layout: {"0": {"answer": int, "query": {clip_text, tag_verb, tag_noun, ...}, "choices": {"0".."4":
EgoClip-like rows with video_uid, clip_start, clip_end, ...}, "types": 1 | 2}, "1": ...}.
types 1 = inter-video (choices from different videos), 2 = intra-video (same video).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from egovlp.errors import InputError
from egovlp.formats import read_json, write_json_atomic

INTER, INTRA = 1, 2
MIN_CHOICES = 2


@dataclass
class MCQItem:
    key: str
    answer: int
    query: dict
    choices: list[dict]
    type: int


def _number(value, where: str) -> float:
    if isinstance(value, bool):
        raise InputError(f"{where}: expected a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(out):
        raise InputError(f"{where}: expected a finite number, got {value!r}")
    return out


def _parse_item(key: str, raw, where: str) -> MCQItem:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected an object")
    for name in ("answer", "query", "choices", "types"):
        if name not in raw:
            raise InputError(f"{where}: missing '{name}'")
    query = raw["query"]
    if not isinstance(query, dict) or not isinstance(query.get("clip_text"), str):
        raise InputError(f"{where}.query: expected an object with a clip_text string")
    raw_choices = raw["choices"]
    if isinstance(raw_choices, dict):
        order = sorted(raw_choices, key=lambda k: int(k) if str(k).isdigit() else -1)
        if order != [str(i) for i in range(len(raw_choices))]:
            raise InputError(f'{where}.choices: keys must be "0".."{len(raw_choices) - 1}"')
        choice_list = [raw_choices[k] for k in order]
    elif isinstance(raw_choices, list):
        choice_list = raw_choices
    else:
        raise InputError(f'{where}.choices: expected an object keyed "0".."4"')
    if len(choice_list) < MIN_CHOICES:
        raise InputError(f"{where}.choices: {len(choice_list)} choice(s), need at least {MIN_CHOICES}")
    choices = []
    for i, choice in enumerate(choice_list):
        cw = f'{where}.choices["{i}"]'
        if not isinstance(choice, dict):
            raise InputError(f"{cw}: expected an object")
        if not isinstance(choice.get("video_uid"), str) or not choice["video_uid"]:
            raise InputError(f"{cw}: missing video_uid")
        for name in ("clip_start", "clip_end"):
            if name not in choice:
                raise InputError(f"{cw}: missing {name}")
        choice = dict(choice)
        choice["clip_start"] = _number(choice["clip_start"], f"{cw}.clip_start")
        choice["clip_end"] = _number(choice["clip_end"], f"{cw}.clip_end")
        choices.append(choice)
    answer = raw["answer"]
    if isinstance(answer, str) and answer.isdigit():
        answer = int(answer)
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise InputError(f"{where}.answer: {answer!r} is not a choice index 0..{len(choices) - 1}")
    kind = raw["types"]
    if kind not in (INTER, INTRA) or isinstance(kind, bool):
        raise InputError(f"{where}.types: {kind!r} is not 1 (inter-video) or 2 (intra-video)")
    return MCQItem(key=str(key), answer=answer, query=query, choices=choices, type=int(kind))


def read_egomcq(path: str | os.PathLike) -> list[MCQItem]:
    """Items of an EgoMCQ json in key order ("0", "1", ...); InputError names file and key."""
    path = Path(path)
    data = read_json(path, "EgoMCQ json")
    if not isinstance(data, dict):
        raise InputError(f'{path}: expected an object keyed "0".."N-1"')
    keys = sorted(data, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, str(k)))
    return [_parse_item(k, data[k], f'{path}: ["{k}"]') for k in keys]


def write_egomcq(items: Iterable[MCQItem], path: str | os.PathLike) -> None:
    """Write items in the EgoMCQ layout (choices keyed "0".."N-1"), atomically."""
    out = {}
    for item in items:
        out[str(item.key)] = {
            "answer": int(item.answer),
            "query": item.query,
            "choices": {str(i): choice for i, choice in enumerate(item.choices)},
            "types": int(item.type),
        }
    write_json_atomic(out, path)

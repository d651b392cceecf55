"""Verb and noun vocabularies in the Ego4D tag style, and the multi-hot tag vectors EgoNCE uses.

One JSON file per kind: `verb_taxonomy.json` = {"verbs": [{"id": 0, "name": "pick_up",
"synonyms": ["picks up", ...]}, ...]}, `noun_taxonomy.json` the same under "nouns". Ids are the
integers that EgoClip's tag_verb / tag_noun columns hold. The reader also takes Ego4D's plain list of
names ({"verbs": ["take_(pick,_grab,_get)", ...]}), where the position is the id.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from egovlp.errors import InputError
from egovlp.formats import read_json, write_json_atomic

KINDS = ("verb", "noun")
FILE_NAMES = {"verb": "verb_taxonomy.json", "noun": "noun_taxonomy.json"}


@dataclass
class TaxonomyEntry:
    id: int
    name: str
    synonyms: list[str] = field(default_factory=list)


def _kind_key(data: dict, path: Path) -> str:
    keys = [f"{kind}s" for kind in KINDS if f"{kind}s" in data]
    if len(keys) != 1:
        raise InputError(f"{path}: expected exactly one of the keys 'verbs' or 'nouns' at the top level")
    return keys[0]


def read_taxonomy(path: str | os.PathLike) -> list[TaxonomyEntry]:
    """Entries of a verb or noun taxonomy file, sorted by id; ids must be unique non-negative ints."""
    path = Path(path)
    data = read_json(path, "taxonomy")
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object with a 'verbs' or 'nouns' list")
    key = _kind_key(data, path)
    items = data[key]
    if not isinstance(items, list):
        raise InputError(f"{path}: {key} must be a list")
    entries: list[TaxonomyEntry] = []
    for i, item in enumerate(items):
        where = f"{path}: {key}[{i}]"
        if isinstance(item, str):  # Ego4D's plain list of names
            entries.append(TaxonomyEntry(i, item, []))
            continue
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected an object with id, name, synonyms")
        entry_id, name, synonyms = item.get("id"), item.get("name"), item.get("synonyms", [])
        if not isinstance(entry_id, int) or isinstance(entry_id, bool) or entry_id < 0:
            raise InputError(f"{where}.id: expected a non-negative integer, got {entry_id!r}")
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}.name: expected a non-empty string, got {name!r}")
        if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
            raise InputError(f"{where}.synonyms: expected a list of strings")
        entries.append(TaxonomyEntry(entry_id, name, list(synonyms)))
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(f"{path}: duplicate {key} id(s) {dup}")
    return sorted(entries, key=lambda e: e.id)


def write_taxonomy(entries: Iterable[TaxonomyEntry], path: str | os.PathLike, kind: str) -> None:
    """Write a `verb` or `noun` taxonomy file atomically (entries sorted by id)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    items = [
        {"id": int(e.id), "name": e.name, "synonyms": list(e.synonyms)}
        for e in sorted(entries, key=lambda e: e.id)
    ]
    write_json_atomic({f"{kind}s": items}, path, indent=1)


def multi_hot(ids: list[int], size: int) -> torch.Tensor:
    """Tag ids -> float32 [size] with 1 at each id (repeats allowed)."""
    out = torch.zeros(size, dtype=torch.float32)
    bad = [i for i in ids if not 0 <= int(i) < size]
    if bad:
        raise InputError(f"tag id(s) {bad} out of range for a vocabulary of {size}")
    if ids:
        out[torch.as_tensor(list(ids), dtype=torch.long)] = 1.0
    return out

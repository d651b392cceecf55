"""Readers and writers for the data formats the project speaks (docs/design.md B.5 and C).

- `egoclip`: the EgoClip narration csv (tab separated) and the scene segment id.
- `egomcq`: the EgoMCQ multiple-choice json.
- `taxonomy`: verb / noun vocabularies in the Ego4D tag style, multi-hot tag vectors.
- `ego4d`: NLQ, moment-query and VQ2D annotation files.

Readers raise `egovlp.errors.InputError` naming the file and the row or JSON path at fault; writers
are atomic (`egovlp.io`). The names below are importable from
this package directly; the submodules load on first use.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from egovlp.errors import InputError
from egovlp.io import atomic_write, write_json_atomic


def read_json(path: str | os.PathLike, what: str = "JSON") -> Any:
    """json.load with an InputError naming the file (and what it should be) on a missing file or bad JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{path}: cannot read {what} ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None


_EXPORTS = {
    "egoclip": (
        "EGOCLIP_COLUMNS",
        "EgoClipRow",
        "read_egoclip",
        "iter_egoclip",
        "write_egoclip",
        "segment_id",
    ),
    "egomcq": ("MCQItem", "read_egomcq", "write_egomcq"),
    "taxonomy": ("TaxonomyEntry", "read_taxonomy", "write_taxonomy", "multi_hot"),
    "ego4d": (
        "NLQClip",
        "NLQQuery",
        "MQClip",
        "MQLabel",
        "VQClip",
        "VQQuerySet",
        "VQBox",
        "read_nlq",
        "read_moments",
        "read_vq2d",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    # lazy re-exports (PEP 562): the submodules import this package's helpers, so an eager
    # `from .egoclip import ...` here would be circular
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["atomic_write", "read_json", "write_json_atomic", *_WHERE]

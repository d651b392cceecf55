"""Readers and writers for the data formats the project speaks (DESIGN.md B.5 and C).

- `egoclip`: the EgoClip narration csv (tab separated) and the scene segment id.
- `egomcq`: the EgoMCQ multiple-choice json.
- `taxonomy`: verb / noun vocabularies in the Ego4D tag style, multi-hot tag vectors.
- `ego4d`: NLQ, moment-query and VQ2D annotation files.

Readers raise `egovlp.errors.InputError` naming the file and the row or JSON path at fault; writers
are atomic (temp file in the same folder, then `os.replace`). The names below are importable from
this package directly; the submodules load on first use.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temp file next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would have
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(obj: Any, path: str | os.PathLike, indent: int | None = None) -> None:
    """json.dump to a temp file in the same folder, then rename over `path`."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=indent)


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
        "read_json",
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


__all__ = ["atomic_write", "write_json_atomic", *_WHERE]

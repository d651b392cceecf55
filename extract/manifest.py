"""The run's manifest: one parquet row per input (status ok / failed / skipped), per rank and merged.

Each rank writes `manifest.rank{r}.parquet` in the output folder; `merge_manifests` (run by
`egovlp extract --merge OUT`, or by rank 0 at the end of a one-process run) joins them into
`manifest.parquet`. Both writes are atomic.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from egovlp.errors import InputError
from egovlp.formats import atomic_write

MANIFEST = "manifest.parquet"
_PART = re.compile(r"manifest\.rank(\d+)\.parquet$")

SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("source", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("rows", pa.int64()),
        ("seconds", pa.float64()),
        ("duration", pa.float64()),
        ("rank", pa.int64()),
    ]
)


@dataclass
class ManifestRow:
    name: str
    source: str
    status: str  # ok | failed | skipped (already complete from an earlier run)
    error: str | None = None
    rows: int = 0
    seconds: float = 0.0  # wall time spent on the input in this run
    duration: float | None = None  # video seconds covered
    rank: int = 0


def _write_table(table: pa.Table, path: Path) -> None:
    with atomic_write(path, "wb") as f:
        pq.write_table(table, f)


def write_rank_manifest(rows: list[ManifestRow], out: Path, rank: int) -> Path:
    path = out / f"manifest.rank{rank}.parquet"
    table = pa.Table.from_pylist([asdict(r) for r in rows], schema=SCHEMA)
    _write_table(table, path)
    return path


def merge_manifests(out: str | Path) -> Path:
    """Join every `manifest.rank*.parquet` of `out` into `manifest.parquet` (sorted by name)."""
    out = Path(out)
    parts = sorted(p for p in out.glob("manifest.rank*.parquet") if _PART.search(p.name))
    if not parts:
        raise InputError(f"{out}: no manifest.rank*.parquet to merge")
    table = pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts])
    table = table.sort_by([("name", "ascending")])
    path = out / MANIFEST
    _write_table(table, path)
    return path


def read_manifest(path: str | Path) -> list[dict]:
    return pq.read_table(path).to_pylist()

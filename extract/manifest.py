"""The run's manifest: `manifest.parquet`, one row per input (status ok / failed / skipped), atomic."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from egovlp.io import atomic_write

MANIFEST = "manifest.parquet"

SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("source", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("rows", pa.int64()),
        ("seconds", pa.float64()),
        ("duration", pa.float64()),
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


def write_manifest(rows: list[ManifestRow], out: Path) -> Path:
    """`out/manifest.parquet`, sorted by name; raises OSError when it cannot be written."""
    path = out / MANIFEST
    table = pa.Table.from_pylist([asdict(r) for r in sorted(rows, key=lambda r: r.name)], schema=SCHEMA)
    with atomic_write(path, "wb") as f:
        pq.write_table(table, f)
    return path


def read_manifest(path: str | Path) -> list[dict]:
    return pq.read_table(path).to_pylist()

"""A folder written by `egovlp extract`, read through the feature store as a stream of index rows.

The scan reads only the sidecars (cheap) and checks that every file comes from the same weights;
the matrices are read one file at a time when the build asks for a sample or for the chunks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlp.errors import InputError
from egovlp.features import (
    check_same_identity,
    list_feature_files,
    read_matrix,
    read_sidecar,
    sidecar_path,
)
from egovlp.timebase import ROWS_PER_SECOND
from serve.index.build import CHUNK_ROWS, Chunk, files_dict
from serve.index.store import l2_normalize

logger = logging.getLogger(__name__)


@dataclass
class FeatureFile:
    path: Path
    sidecar: Path
    meta: dict[str, Any]
    rows: int


def _row_count(item: FeatureFile) -> int | None:
    num = item.meta.get("num_rows")
    times = item.meta.get("row_times")
    if times is not None and num is not None and len(times) != num:
        raise InputError(f"{item.sidecar}: row_times has {len(times)} entries for num_rows {num}")
    return len(times) if times is not None else num


class FeatureFolderSource:
    """Every `{name}.pt|.npy` with a `{name}.json` sidecar in a folder (minus `skip` names)."""

    def __init__(self, folder: str | os.PathLike, skip: set[str] | None = None, file_offset: int = 0) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise InputError(f"{root}: features folder not found")
        self.root = root
        self.items: list[FeatureFile] = []
        for path in list_feature_files(root):
            name = path.stem
            if skip and name in skip:
                logger.warning("%s: already in the index, skipped", path)
                continue
            side = sidecar_path(path)
            if not side.is_file():
                logger.warning("%s: no sidecar %s, skipped", path, side.name)
                continue
            item = FeatureFile(path, side, read_sidecar(side), 0)
            rows = _row_count(item)
            if rows is None:  # a sidecar without row counts: the matrix says
                rows = read_matrix(path).shape[0]
            item.rows = int(rows)
            self.items.append(item)
        self.identity = check_same_identity((i.sidecar, i.meta) for i in self.items)
        precisions = {i.meta.get("precision") for i in self.items}
        self.identity["precision"] = precisions.pop() if len(precisions) == 1 else None
        self.count = sum(i.rows for i in self.items)
        self.dim = self._dim()
        self.file_offset = file_offset
        self.files = files_dict(
            [
                (
                    i.path.stem,
                    str(i.meta.get("clip_uid") or i.path.stem),
                    str(i.meta.get("video_uid") or ""),
                    str(i.meta.get("source") or i.path.name),
                    float(i.meta.get("video_start_sec") or 0.0),
                )
                for i in self.items
            ]
        )

    def _dim(self) -> int:
        if not self.items:
            return 0
        first = self.items[0]
        dim = first.meta.get("dim") or read_matrix(first.path).shape[1]
        for item in self.items:
            if item.meta.get("dim") not in (None, dim):
                raise InputError(
                    f"{item.path}: feature dim {item.meta['dim']} differs from {dim} (mixed models?)"
                )
        return int(dim)

    def _read(self, item: FeatureFile) -> np.ndarray:
        arr = read_matrix(item.path)  # [T, D]
        if arr.shape[1] != self.dim:
            raise InputError(
                f"{item.path}: feature dim {arr.shape[1]} differs from {self.dim} (mixed models?)"
            )
        if arr.shape[0] != item.rows:
            raise InputError(
                f"{item.sidecar}: describes {item.rows} rows, {item.path.name} has {arr.shape[0]}"
            )
        return l2_normalize(arr)

    def _times(self, item: FeatureFile) -> tuple[np.ndarray, np.ndarray]:
        times = item.meta.get("row_times")
        if times is None:
            rate = float(item.meta.get("rows_per_second") or ROWS_PER_SECOND)
            start = np.arange(item.rows, dtype=np.float64) / rate
            return start, start + 1.0 / rate
        arr = np.asarray(times, dtype=np.float64).reshape(item.rows, 2)
        return arr[:, 0], arr[:, 1]

    def sample(self, n: int, seed: int) -> np.ndarray:
        """n rows [n, D] from randomly chosen files: half of each file's rows, so about 2n rows are read."""
        if n <= 0:
            return np.zeros((0, self.dim), np.float32)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.items))
        # half of every file read (not n / count of it, which would read count / 2 rows to collect n)
        frac = 1.0 if self.count <= 2 * n else 0.5
        picked: list[np.ndarray] = []
        have = 0
        for i in order:
            arr = self._read(self.items[i])
            take = max(1, int(round(len(arr) * frac)))
            picked.append(arr[rng.choice(len(arr), min(take, len(arr)), replace=False)])
            have += len(picked[-1])
            if have >= n:
                break
        rows = np.concatenate(picked)
        return rows[rng.choice(len(rows), min(n, len(rows)), replace=False)]

    def chunks(self) -> Iterator[Chunk]:
        """Every row, file by file, in chunks of about CHUNK_ROWS."""
        parts: list[tuple[np.ndarray, ...]] = []
        size = 0
        for fid, item in enumerate(self.items):
            vectors = self._read(item)
            start, end = self._times(item)
            ids = np.full(item.rows, fid + self.file_offset, np.int32)
            parts.append((vectors, ids, np.arange(item.rows, dtype=np.int32), start, end))
            size += item.rows
            if size >= CHUNK_ROWS:
                yield _join(parts)
                parts, size = [], 0
        if parts:
            yield _join(parts)


def _join(parts: list[tuple[np.ndarray, ...]]) -> Chunk:
    cols = [np.concatenate([p[i] for p in parts]) for i in range(5)]
    return Chunk(*cols)

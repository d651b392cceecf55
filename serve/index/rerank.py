"""Re-ranking compressed-index candidates against the rows kept on disk (the `pq_rerank` kind).

4-bit fast-scan PQ codes (dim/8 bytes a row) are cheap to hold and to scan, but among the
near-duplicate rows of a clip they rank poorly (benchmarks/RESULTS.md). So the FAISS index only
proposes `k_factor * k` candidates, and those are re-scored by the exact inner product against
every row stored in fp16 in VECTORS_FILE, a `.npy` memory-mapped read-only at load: its pages are
file-backed (the kernel drops them under pressure), not anonymous memory, and a search reads only
the candidates' rows. FAISS' own IndexRefine would hold those codes in RAM.

The pages a search maps stay counted in the process's RSS (file-backed) until they are unmapped, so
a long-running service would end up with the whole file in its RSS: every RELEASE_EVERY queries the
mapping is dropped with madvise(MADV_DONTNEED), which keeps the pages in the page cache (no re-read
from disk) and costs ~13 ms once (1M rows), bounding what the file adds to RSS (~0.7 MB a query
at k_factor 24).

The file is written row by row through a temp file beside the index (VectorsWriter) and published
with the rest of the folder; index.json's `rerank` names it, search_params the tuned k_factor.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np

from egovlp.errors import InputError
from egovlp.io import AtomicFile

VECTORS_FILE = "vectors.f16.npy"
VECTORS_DTYPE = np.dtype("<f2")
COPY_ROWS = 1 << 18  # rows per block when `--add` copies the old vectors into the new file
RELEASE_EVERY = 512  # queries between two unmappings of the rows file's pages (<= ~400 MB mapped)


class VectorsWriter:
    """Streams [count, dim] fp16 rows into a `.npy` temp file; `commit` publishes it."""

    def __init__(self, path: Path, count: int, dim: int) -> None:
        self._target = AtomicFile(path)
        self.expected, self.dim, self.count = int(count), int(dim), 0
        self._file = open(self._target.tmp, "wb")  # noqa: SIM115 - closed by close()/abort()
        header = {"descr": VECTORS_DTYPE.str, "fortran_order": False, "shape": (self.expected, self.dim)}
        np.lib.format.write_array_header_2_0(self._file, header)

    @property
    def tmp(self) -> Path:
        return self._target.tmp

    def write(self, vectors: np.ndarray) -> None:
        if self.count + len(vectors) > self.expected:
            raise InputError(f"more rows than the {self.expected} promised to {self._target.path.name}")
        self._file.write(np.ascontiguousarray(vectors, dtype=VECTORS_DTYPE).tobytes())
        self.count += len(vectors)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            if self.count != self.expected:
                raise InputError(
                    f"{self._target.path.name}: {self.count} rows written, {self.expected} promised"
                )

    def open(self) -> tuple[np.ndarray, mmap.mmap]:
        """The finished temp file, memory-mapped (the build tunes k_factor on it before publishing)."""
        self.close()
        return open_vectors(self._target.tmp, self.expected, self.dim)

    def commit(self) -> None:
        self.close()
        self._target.commit()

    def abort(self) -> None:
        try:
            if not self._file.closed:
                self._file.close()
        finally:
            self._target.abort()


def open_vectors(path: Path, count: int, dim: int) -> tuple[np.ndarray, mmap.mmap]:
    """VECTORS_FILE memory-mapped read-only ([count, dim] view, and the mapping), checked against the
    index's count and dim."""
    if not path.is_file():
        raise InputError(
            f"{path.parent}: not an index folder ({path.name} missing; rebuild it with `egovlp index`)"
        )
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(file)
            offset = file.tell()
            mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable row vectors ({' '.join(str(err).split())[:160]})") from None
    if dtype != VECTORS_DTYPE or fortran or shape != (count, dim):
        mapping.close()
        raise InputError(
            f"{path}: {dtype} rows of shape {shape}, the index wants float16 ({count}, {dim}) "
            "(rebuild with `egovlp index`)"
        )
    if mapping.size() < offset + count * dim * dtype.itemsize:
        mapping.close()
        raise InputError(f"{path}: truncated row vectors (rebuild with `egovlp index`)")
    vectors = np.frombuffer(mapping, dtype=dtype, count=count * dim, offset=offset).reshape(count, dim)
    return vectors, mapping


class RerankedIndex:
    """A FAISS index whose `k_factor * k` candidates are re-scored exactly against `vectors` [N, D].

    Looks like the FAISS index to its callers: `search(queries, k) -> (scores, ids)` ([Q, k] each,
    -1 ids past the end), `ntotal`, `d`; search parameters other than k_factor go to the FAISS index.
    """

    def __init__(self, index: Any, vectors: np.ndarray, k_factor: int, mapping: mmap.mmap | None = None):
        self.index, self.vectors, self.k_factor = index, vectors, int(k_factor)
        self.mapping, self.since_release = mapping, 0

    def release(self) -> None:
        """Unmap the pages searches have read (they stay in the page cache): RSS back to the codes."""
        if self.mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
            self.mapping.madvise(mmap.MADV_DONTNEED)
        self.since_release = 0

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n_candidates = max(k, min(self.ntotal, k * self.k_factor))
        _, candidates = self.index.search(queries, n_candidates)  # [Q, k * k_factor]
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for q, row in enumerate(candidates):
            found = np.unique(row[row >= 0])  # sorted: the rows are read from the file in order
            if len(found) == 0:
                continue
            exact = self.vectors[found].astype(np.float32) @ queries[q]  # [c]
            best = np.argsort(-exact, kind="stable")[:k]
            scores[q, : len(best)], ids[q, : len(best)] = exact[best], found[best]
        self.since_release += len(queries)
        if self.since_release >= RELEASE_EVERY:
            self.release()
        return scores, ids


def copy_vectors(old: np.ndarray, writer: VectorsWriter) -> None:
    """The rows already indexed into the new file, block by block from the memory map (`--add`)."""
    for first in range(0, len(old), COPY_ROWS):
        writer.write(old[first : first + COPY_ROWS])

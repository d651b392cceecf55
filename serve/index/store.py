"""An index folder on disk and the loaded, searchable index.

INDEX_DIR holds:

    index.faiss   the FAISS index (inner product over L2-normalized rows = cosine similarity)
    rows.arrow    one row per index row, Arrow IPC, memory-mapped at load: file_id (int32), row (int32),
                  start, end (float32, clip-relative seconds)
    files.arrow   one row per feature file: name, clip_uid, video_uid, source, video_start (s)
    index.json    dim, factory, search parameters, count, measured recall@10, and the identity of the
                  weights the features came from (model, weights_hash, config_hash)
    vectors.f16.npy  only for the `pq_rerank` kind (index.json `rerank`): every row in fp16, memory-mapped,
                  to re-score the PQ candidates exactly (serve.index.rerank)

The rows table is never turned into Python objects: a search takes its k ids from the memory-mapped
columns, so a 25M-row index costs its FAISS codes plus the pages the hits touch. (Arrow's own
`Table.take` first joins a column's record batches, a copy of the whole column per search: ~2.5 ms
at 1M rows; `RowColumns` indexes the batches' zero-copy views instead.)
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlp.errors import InputError
from egovlp.io import AtomicFile
from egovlp.validate import is_write_error, write_error
from serve.index.rerank import VECTORS_FILE, RerankedIndex, VectorsWriter, open_vectors

_FULL_DISK_BYTES = 1 << 20  # less free space than this after a failed write: the disk is full

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
ROWS_FILE = "rows.arrow"
FILES_FILE = "files.arrow"
INFO_FILE = "index.json"
FILE_COLUMNS = ("name", "clip_uid", "video_uid", "source", "video_start")


def faiss_module():
    import faiss

    return faiss


def rows_schema():
    import pyarrow as pa

    return pa.schema(
        [("file_id", pa.int32()), ("row", pa.int32()), ("start", pa.float32()), ("end", pa.float32())]
    )


def files_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("name", pa.string()),
            ("clip_uid", pa.string()),
            ("video_uid", pa.string()),
            ("source", pa.string()),
            ("video_start", pa.float64()),
        ]
    )


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows to unit length (eps 1e-8, as the model's cosine similarity), float32 contiguous [N, D]."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-8), dtype=np.float32)


def gpu_available() -> bool:
    """True when the installed FAISS has GPU support and sees a GPU."""
    faiss = faiss_module()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def set_search_params(index, params: dict[str, Any]) -> None:
    """nprobe / efSearch / k_factor by name through FAISS' ParameterSpace (works through wrappers);
    `k_factor` of a RerankedIndex is its own (candidates per hit), the rest go to its FAISS index."""
    faiss = faiss_module()
    if isinstance(index, RerankedIndex):
        params = dict(params)
        if params.get("k_factor") is not None:
            index.k_factor = int(params.pop("k_factor"))
        index = index.index
    space = faiss.GpuParameterSpace() if type(index).__name__.startswith("Gpu") else faiss.ParameterSpace()
    for name, value in params.items():
        if value is not None:
            space.set_index_parameter(index, name, value)


class RowsWriter:
    """Streams the rows table (Arrow IPC file) through a temp file; `commit` publishes it."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        self._target = AtomicFile(path)
        self._sink = pa.OSFile(str(self._target.tmp), "wb")
        self._writer = pa.ipc.new_file(self._sink, rows_schema())
        self._closed = False
        self.count = 0

    def write(self, file_id: np.ndarray, row: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        import pyarrow as pa

        batch = pa.record_batch(
            [
                pa.array(file_id, pa.int32()),
                pa.array(row, pa.int32()),
                pa.array(start, pa.float32()),
                pa.array(end, pa.float32()),
            ],
            schema=rows_schema(),
        )
        self._writer.write_batch(batch)
        self.count += len(file_id)

    def write_batch(self, batch) -> None:
        self._writer.write_batch(batch)
        self.count += batch.num_rows

    def close(self) -> None:
        """Finish the temp file; `commit` renames it."""
        if not self._closed:
            self._closed = True
            self._writer.close()
            self._sink.close()

    def commit(self) -> None:
        self.close()
        self._target.commit()

    def abort(self) -> None:
        try:
            if not self._closed:
                self._closed = True
                self._sink.close()
        finally:
            self._target.abort()


def write_files_table(path: Path, files: dict[str, list]) -> None:
    import pyarrow as pa

    table = pa.table({c: files[c] for c in FILE_COLUMNS}, schema=files_schema())
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def write_faiss(path: Path, index) -> None:
    faiss = faiss_module()
    if isinstance(index, RerankedIndex):  # its vectors are written by a VectorsWriter
        index = index.index
    if type(index).__name__.startswith("Gpu"):
        index = faiss.index_gpu_to_cpu(index)
    try:
        faiss.write_index(index, str(path))
    except RuntimeError:
        # FAISS reports a failed fwrite without its errno: name a full disk when that is what it is
        if shutil.disk_usage(path.parent).free < _FULL_DISK_BYTES:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise


def publish(
    out: Path,
    index,
    rows: RowsWriter,
    files: dict[str, list],
    info: dict[str, Any],
    vectors: VectorsWriter | None = None,
) -> None:
    """Every file is written to its temp file first, then all are renamed, index.json last: a failed
    write (a full disk during `--add`) leaves the previous index whole. `bytes_per_vector` counts what
    a loaded index holds in RAM (the FAISS file), not the memory-mapped `vectors`."""
    staged = {name: AtomicFile(out / name) for name in (INDEX_FILE, FILES_FILE, INFO_FILE)}
    try:
        write_faiss(staged[INDEX_FILE].tmp, index)
        info["bytes_per_vector"] = round(staged[INDEX_FILE].tmp.stat().st_size / max(1, index.ntotal), 1)
        rows.close()
        if vectors is not None:
            vectors.close()
        write_files_table(staged[FILES_FILE].tmp, files)
        staged[INFO_FILE].tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        staged[INDEX_FILE].commit()
        rows.commit()
        if vectors is not None:
            vectors.commit()
        staged[FILES_FILE].commit()
        staged[INFO_FILE].commit()
    except (OSError, RuntimeError) as err:
        rows.abort()
        if vectors is not None:
            vectors.abort()
        for target in staged.values():
            target.abort()
        if isinstance(err, RuntimeError):  # FAISS reports a failed fwrite (full disk) as a RuntimeError
            raise InputError(f"{out}: cannot write the index ({' '.join(str(err).split())[:160]})") from None
        if is_write_error(err) or "write" in str(err).lower():
            raise write_error(out, err) from None
        raise


def _open_table(path: Path):
    import pyarrow as pa

    try:
        return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{path}: unreadable index table ({' '.join(str(err).split())[:160]})") from None


def read_info(root: Path) -> dict[str, Any]:
    try:
        info = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{root / INFO_FILE}: unreadable index description ({err})") from None
    if not isinstance(info, dict) or not isinstance(info.get("dim"), int):
        raise InputError(f"{root / INFO_FILE}: not an index description (no integer 'dim')")
    return info


class RowColumns:
    """The rows table's columns as zero-copy numpy views of each record batch (memory-mapped)."""

    NAMES = ("file_id", "row", "start", "end")

    def __init__(self, table) -> None:
        chunks = [table.column(c).chunks for c in self.NAMES]
        sizes = [len(chunk) for chunk in chunks[0]]
        if any([len(chunk) for chunk in column] != sizes for column in chunks):
            table = table.combine_chunks()  # columns batched differently (not written by RowsWriter)
            chunks = [table.column(c).chunks for c in self.NAMES]
            sizes = [len(chunk) for chunk in chunks[0]]
        self.starts = np.cumsum([0] + sizes[:-1]).astype(np.int64)  # first row of each batch
        self.views = [
            [chunk.to_numpy(zero_copy_only=chunk.null_count == 0) for chunk in column] for column in chunks
        ]

    def take(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The columns at row `ids` (only those rows' pages are read)."""
        batch = np.searchsorted(self.starts, ids, side="right") - 1
        local = ids - self.starts[batch]
        out = {}
        for name, views in zip(self.NAMES, self.views, strict=True):
            out[name] = np.array(
                [views[b][i] for b, i in zip(batch.tolist(), local.tolist(), strict=True)],
                dtype=views[0].dtype if views else np.float32,
            )
        return out


@dataclass
class SearchIndex:
    """A loaded index: FAISS index (GPU copy when available), memory-mapped rows, files, index.json."""

    index: Any
    rows: Any  # pyarrow.Table, memory-mapped
    files: dict[str, list]
    info: dict[str, Any]
    columns: RowColumns | None = None  # built from `rows` on first search

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    def __len__(self) -> int:
        return int(self.rows.num_rows)

    @property
    def file_names(self) -> list[str]:
        return list(self.files["name"])

    def search(self, queries: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """Queries [Q, D] (normalized here) -> per query up to k hits {score, clip_uid, ...}, best first."""
        k = min(int(k), len(self))
        if k <= 0:
            return [[] for _ in range(len(queries))]
        scores, ids = self.index.search(l2_normalize(queries), k)  # [Q, k] each
        valid = ids >= 0
        if self.columns is None:
            self.columns = RowColumns(self.rows)
        cols = self.columns.take(ids[valid].astype(np.int64))  # only the hit rows are read from disk
        out: list[list[dict[str, Any]]] = []
        pos = 0
        for q in range(ids.shape[0]):
            hits = []
            for s in scores[q][valid[q]].tolist():
                f = int(cols["file_id"][pos])
                start, end = float(cols["start"][pos]), float(cols["end"][pos])
                offset = float(self.files["video_start"][f])
                hits.append(
                    {
                        "score": s,
                        "name": self.files["name"][f],
                        "clip_uid": self.files["clip_uid"][f],
                        "video_uid": self.files["video_uid"][f],
                        "start": start,
                        "end": end,
                        "video_start": offset + start,
                        "video_end": offset + end,
                        "source": self.files["source"][f],
                        "row": int(cols["row"][pos]),
                    }
                )
                pos += 1
            out.append(hits)
        return out


def load_index(index_dir: str | os.PathLike, use_gpu: bool | None = None) -> SearchIndex:
    """Read INDEX_DIR (rows memory-mapped); moves the index to the GPU when FAISS has one."""
    faiss = faiss_module()
    root = Path(index_dir)
    if not root.is_dir():
        raise InputError(f"{root}: no such index folder")
    for name in (INDEX_FILE, ROWS_FILE, FILES_FILE, INFO_FILE):
        if not (root / name).is_file():
            raise InputError(f"{root}: not an index folder ({name} missing; build it with `egovlp index`)")
    info = read_info(root)
    try:
        index = faiss.read_index(str(root / INDEX_FILE))
    except RuntimeError as err:
        raise InputError(
            f"{root / INDEX_FILE}: unreadable FAISS index ({str(err).splitlines()[0][:160]})"
        ) from None
    rows = _open_table(root / ROWS_FILE)
    files_table = _open_table(root / FILES_FILE)
    if rows.schema.names != rows_schema().names or files_table.schema.names != list(FILE_COLUMNS):
        raise InputError(f"{root}: index tables have unexpected columns (rebuild with `egovlp index`)")
    if index.ntotal != rows.num_rows or index.d != info["dim"]:
        raise InputError(
            f"{root}: index has {index.ntotal} rows of dim {index.d}, metadata {rows.num_rows} rows "
            f"of dim {info['dim']} (rebuild)"
        )
    files = {c: files_table.column(c).to_pylist() for c in FILE_COLUMNS}  # one entry per file, not per row
    if gpu_available() if use_gpu is None else use_gpu:
        index = _to_gpu(index)
    if info.get("rerank"):  # the pq_rerank kind: candidates re-scored against the rows on disk
        path = root / info["rerank"].get("file", VECTORS_FILE)
        vectors, mapping = open_vectors(path, int(index.ntotal), index.d)
        index = RerankedIndex(index, vectors, k_factor=1, mapping=mapping)
    set_search_params(index, info.get("search_params") or {})
    return SearchIndex(index=index, rows=rows, files=files, info=info)


def _to_gpu(index):
    """The GPU copy when FAISS supports this index type on the GPU; the CPU index otherwise."""
    faiss = faiss_module()
    try:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    except (RuntimeError, AttributeError) as err:
        logger.info("index stays on the CPU (%s)", str(err).splitlines()[0][:120])
        return index

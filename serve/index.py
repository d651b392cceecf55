"""`egovlp index`: a FAISS index over extracted clip features, with a row-aligned metadata table.

Input: a folder written by `egovlp extract` - `{name}.pt` (float32 [T, D]) or `{name}.npy`, each with a
sidecar `{name}.json` (clip/video uid, row_times, dim, config_hash, ...). Every row is one searchable
window. Output folder (INDEX_DIR):

    index.faiss    the FAISS index (inner product over L2-normalized rows = cosine similarity)
    meta.parquet   one row per index row: name, clip_uid, video_uid, start, end (clip-relative s),
                   video_start, video_end (absolute s), source, row
    index.json     dim, config_hash, model, kind, nlist/nprobe, count, recall@10 measured at build

Exact `IndexFlatIP` below `FLAT_MAX_ROWS`; above it an IVF index (`--kind hnsw` for HNSW) whose nprobe
is raised until recall@10 against exact search reaches `TARGET_RECALL` on a sample of the rows; the
measured recall is printed. `--add` appends new feature files to an existing index without retraining.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from egovlp.errors import InputError

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
META_FILE = "meta.parquet"
INFO_FILE = "index.json"
META_COLUMNS = ("name", "clip_uid", "video_uid", "start", "end", "video_start", "video_end", "source", "row")
FLAT_MAX_ROWS = 50_000  # exact search on 50k x 256 floats costs ~5 ms per query on one core
TARGET_RECALL = 0.95
RECALL_QUERIES = 200


# --------------------------------------------------------------------------------------------
# reading extracted features


@dataclass
class FeatureSet:
    """Feature rows (L2-normalized, float32 [N, D]) plus their metadata columns."""

    vectors: np.ndarray
    meta: dict[str, list] = field(default_factory=lambda: {c: [] for c in META_COLUMNS})
    config_hash: str | None = None
    model: str | None = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows to unit length (eps 1e-8, as the model's cosine similarity), float32 contiguous."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-8), dtype=np.float32)


def _load_matrix(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            import torch

            tensor = torch.load(path, map_location="cpu", weights_only=True)
            if not torch.is_tensor(tensor):
                raise InputError(f"{path}: expected a saved tensor, got {type(tensor).__name__}")
            arr = tensor.float().numpy()
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - torch/numpy raise many types for a bad file
        raise InputError(f"{path}: cannot read features ({' '.join(str(err).split())[:200]})") from None
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a [T, D] matrix, got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: features contain NaN or infinite values")
    return arr.astype(np.float32, copy=False)


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        side = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable sidecar JSON ({err})") from None
    if not isinstance(side, dict):
        raise InputError(f"{path}: sidecar must be a JSON object")
    return side


def read_features(features_dir: str | os.PathLike, skip_names: set[str] | None = None) -> FeatureSet:
    """Every `{name}.pt|.npy` with a `{name}.json` sidecar in `features_dir` -> one FeatureSet.

    Files without a sidecar are skipped with a warning; mixed dims or config hashes are an InputError.
    `skip_names` (already indexed) are skipped too.
    """
    root = Path(features_dir)
    if not root.is_dir():
        raise InputError(f"{root}: features folder not found")
    files = sorted(p for p in root.iterdir() if p.suffix in (".pt", ".npy") and p.is_file())
    chunks: list[np.ndarray] = []
    fs = FeatureSet(vectors=np.zeros((0, 0), np.float32))
    dim: int | None = None
    for path in files:
        name = path.stem
        if skip_names and name in skip_names:
            logger.warning("%s: already in the index, skipped", path)
            continue
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            logger.warning("%s: no sidecar %s, skipped", path, sidecar.name)
            continue
        side = _read_sidecar(sidecar)
        arr = _load_matrix(path)
        if dim is None:
            dim, fs.config_hash, fs.model = arr.shape[1], side.get("config_hash"), side.get("model")
        if arr.shape[1] != dim or int(side.get("dim", arr.shape[1])) != arr.shape[1]:
            raise InputError(f"{path}: feature dim {arr.shape[1]} differs from {dim} (mixed models?)")
        if side.get("config_hash") != fs.config_hash:
            raise InputError(
                f"{sidecar}: config_hash {side.get('config_hash')!r} differs from {fs.config_hash!r} "
                "of the other files (features from different models cannot share an index)"
            )
        row_times = side.get("row_times")
        if not isinstance(row_times, list) or len(row_times) != arr.shape[0]:
            got = len(row_times) if isinstance(row_times, list) else type(row_times).__name__
            raise InputError(f"{sidecar}: row_times has {got} entries for {arr.shape[0]} feature rows")
        video_start = float(side.get("video_start_sec") or 0.0)
        for i, pair in enumerate(row_times):
            try:
                start, end = float(pair[0]), float(pair[1])
            except (TypeError, ValueError, IndexError):
                raise InputError(f"{sidecar}: row_times[{i}] is not a [start, end] pair") from None
            fs.meta["name"].append(name)
            fs.meta["clip_uid"].append(str(side.get("clip_uid") or name))
            fs.meta["video_uid"].append(str(side.get("video_uid") or ""))
            fs.meta["start"].append(start)
            fs.meta["end"].append(end)
            fs.meta["video_start"].append(video_start + start)
            fs.meta["video_end"].append(video_start + end)
            fs.meta["source"].append(str(side.get("source") or path.name))
            fs.meta["row"].append(i)
        chunks.append(arr)
    fs.vectors = l2_normalize(np.concatenate(chunks)) if chunks else np.zeros((0, dim or 0), np.float32)
    return fs


# --------------------------------------------------------------------------------------------
# building and searching


def _faiss():
    import faiss

    return faiss


def gpu_available() -> bool:
    """True when the installed FAISS has GPU support and sees a GPU."""
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def choose_kind(n: int) -> str:
    return "flat" if n <= FLAT_MAX_ROWS else "ivf"


def create_index(vectors: np.ndarray, kind: str = "auto", nlist: int | None = None):
    """A trained, filled FAISS index over normalized `vectors` [N, D] (inner product)."""
    faiss = _faiss()
    n, dim = vectors.shape
    kind = choose_kind(n) if kind == "auto" else kind
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        # ~4 sqrt(N) lists, at least 39 training points per list (FAISS' own rule of thumb)
        nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        train = (
            vectors if n <= 256 * nlist else vectors[np.random.default_rng(0).choice(n, 256 * nlist, False)]
        )
        index.train(train)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    else:
        raise InputError(f"--kind {kind!r}: choose auto, flat, ivf or hnsw")
    index.add(vectors)
    return index


def _set_search_param(index, value: int) -> None:
    faiss = _faiss()
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = value
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = value


def recall_at_k(index, vectors: np.ndarray, k: int = 10, queries: int = RECALL_QUERIES) -> float:
    """Mean overlap of `index`'s top-k with exact top-k, on up to `queries` rows used as queries."""
    faiss = _faiss()
    n = vectors.shape[0]
    if n == 0:
        return 1.0
    k = min(k, n)
    sample = vectors[np.random.default_rng(1).choice(n, min(queries, n), replace=False)]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(sample, k)
    _, got = index.search(sample, k)
    return float(
        np.mean([len(set(a) & set(b)) / k for a, b in zip(truth.tolist(), got.tolist(), strict=True)])
    )


def tune_index(index, vectors: np.ndarray, target: float = TARGET_RECALL) -> tuple[int | None, float]:
    """Raise nprobe (IVF) / efSearch (HNSW) until recall@10 >= target; returns (value, recall)."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexIVF):
        values = [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256) if v < index.nlist] + [index.nlist]
    elif isinstance(index, faiss.IndexHNSW):
        values = [16, 32, 64, 128, 256, 512]
    else:
        return None, recall_at_k(index, vectors)
    recall = 0.0
    for value in values:
        _set_search_param(index, value)
        recall = recall_at_k(index, vectors)
        if recall >= target:
            return value, recall
    return values[-1], recall


@dataclass
class SearchIndex:
    """A loaded index: FAISS index (GPU copy when available) + metadata rows + index.json info."""

    index: Any
    meta: list[dict[str, Any]]
    info: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    def __len__(self) -> int:
        return len(self.meta)

    def search(self, queries: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """Normalized queries [Q, D] -> per query up to k hits {score, clip_uid, ...}, best first."""
        k = min(k, len(self.meta))
        if k <= 0:
            return [[] for _ in range(len(queries))]
        scores, ids = self.index.search(l2_normalize(queries), k)  # [Q, k] each
        out = []
        for row_scores, row_ids in zip(scores.tolist(), ids.tolist(), strict=True):
            out.append(
                [{"score": s, **self.meta[i]} for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
            )
        return out


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_meta(path: Path, meta: dict[str, list]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _atomic(path, lambda tmp: pq.write_table(pa.table(meta), tmp))


def _read_meta(path: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = set(META_COLUMNS) - set(table.column_names)
    if missing:
        raise InputError(f"{path}: metadata table lacks columns {sorted(missing)}")
    return {c: table.column(c).to_pylist() for c in META_COLUMNS}


def _save(out: Path, index, meta: dict[str, list], info: dict[str, Any]) -> None:
    """index + table first, index.json last: a reader checks the counts agree before trusting them."""
    faiss = _faiss()
    out.mkdir(parents=True, exist_ok=True)
    cpu_index = (
        faiss.index_gpu_to_cpu(index) if hasattr(faiss, "index_gpu_to_cpu") and gpu_available() else index
    )
    _atomic(out / INDEX_FILE, lambda tmp: faiss.write_index(cpu_index, tmp))
    _write_meta(out / META_FILE, meta)
    _atomic(out / INFO_FILE, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2) + "\n"))


def build_index(
    features_dir: str | os.PathLike, out_dir: str | os.PathLike, kind: str = "auto", nlist: int | None = None
) -> dict[str, Any]:
    """Build INDEX_DIR from a features folder; returns index.json's content (incl. measured recall)."""
    fs = read_features(features_dir)
    if fs.vectors.shape[0] == 0:
        raise InputError(f"{features_dir}: no feature files with sidecars to index")
    index = create_index(fs.vectors, kind, nlist)
    param, recall = tune_index(index, fs.vectors)
    info = {
        "dim": fs.dim,
        "config_hash": fs.config_hash,
        "model": fs.model,
        "kind": _kind_of(index),
        "search_param": param,
        "count": int(index.ntotal),
        "recall_at_10": recall,
        "files": sorted(set(fs.meta["name"])),
    }
    _save(Path(out_dir), index, fs.meta, info)
    return info


def _kind_of(index) -> str:
    faiss = _faiss()
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    return "flat"


def add_to_index(features_dir: str | os.PathLike, index_dir: str | os.PathLike) -> dict[str, Any]:
    """Append features of files not yet indexed to INDEX_DIR (no retraining); returns the new info."""
    faiss = _faiss()
    loaded = load_index(index_dir, use_gpu=False)
    fs = read_features(features_dir, skip_names=set(loaded.info.get("files", [])))
    n_new = fs.vectors.shape[0]
    if n_new and fs.dim != loaded.dim:
        raise InputError(f"{features_dir}: feature dim {fs.dim} differs from the index's {loaded.dim}")
    if n_new and fs.config_hash != loaded.info.get("config_hash"):
        raise InputError(
            f"{features_dir}: config_hash {fs.config_hash!r} differs from the index's "
            f"{loaded.info.get('config_hash')!r}"
        )
    meta = {c: [m[c] for m in loaded.meta] for c in META_COLUMNS}
    if n_new:
        loaded.index.add(fs.vectors)
        for c in META_COLUMNS:
            meta[c].extend(fs.meta[c])
    info = dict(loaded.info)
    info["count"] = int(loaded.index.ntotal)
    info["files"] = sorted(set(info.get("files", [])) | set(fs.meta["name"]))
    if n_new and isinstance(loaded.index, faiss.IndexIVF | faiss.IndexHNSW):
        # the recall printed at build time no longer describes the grown index: measure it again
        info["recall_at_10"] = recall_at_k(loaded.index, _reconstruct_all(loaded.index))
    _save(Path(index_dir), loaded.index, meta, info)
    info["added"] = n_new
    return info


def _reconstruct_all(index) -> np.ndarray:
    faiss = _faiss()
    if isinstance(index, faiss.IndexIVF):
        index.make_direct_map()
    return index.reconstruct_n(0, index.ntotal)


def load_index(index_dir: str | os.PathLike, use_gpu: bool | None = None) -> SearchIndex:
    """Read INDEX_DIR; moves the index to the GPU when FAISS has one (use_gpu None = if available)."""
    faiss = _faiss()
    root = Path(index_dir)
    for name in (INDEX_FILE, META_FILE, INFO_FILE):
        if not (root / name).is_file():
            raise InputError(f"{root}: not an index folder ({name} missing; build it with `egovlp index`)")
    info = json.loads((root / INFO_FILE).read_text())
    index = faiss.read_index(str(root / INDEX_FILE))
    meta_cols = _read_meta(root / META_FILE)
    n = len(meta_cols["name"])
    if index.ntotal != n or index.d != info.get("dim"):
        raise InputError(
            f"{root}: index has {index.ntotal} rows of dim {index.d}, metadata {n} rows (rebuild)"
        )
    if info.get("search_param"):
        _set_search_param(index, int(info["search_param"]))
    if (gpu_available() if use_gpu is None else use_gpu) and not isinstance(index, faiss.IndexHNSW):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    meta = [{c: meta_cols[c][i] for c in META_COLUMNS} for i in range(n)]
    return SearchIndex(index=index, meta=meta, info=info)


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="egovlp index", description="FAISS index over extracted clip features."
    )
    parser.add_argument("--features", required=True, help="folder of {name}.pt|.npy + {name}.json sidecars")
    parser.add_argument("--out", required=True, help="index folder to write (INDEX_DIR)")
    parser.add_argument("--add", action="store_true", help="append new files to the existing index at --out")
    parser.add_argument("--kind", default="auto", choices=["auto", "flat", "ivf", "hnsw"], help="index type")
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4 sqrt(N))")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.add:
        info = add_to_index(args.features, args.out)
    else:
        info = build_index(args.features, args.out, kind=args.kind, nlist=args.nlist)
    summary = {k: v for k, v in info.items() if k != "files"}
    summary["out"] = args.out
    summary["gpu"] = gpu_available()
    print(json.dumps(summary))
    return 0

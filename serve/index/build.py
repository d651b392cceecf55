"""Building an index folder from a stream of vectors, without ever holding all of them in RAM.

A source (a folder of extracted features, or the benchmark's synthetic generator) gives a training
sample and then the rows in chunks. The index is trained on the sample, filled chunk by chunk, and
its rows table is written batch by batch. The exact top-10 of a few query rows is kept in a running
heap over the same chunks, so the recall@10 printed at the end is measured against exact search
over every row, and the search parameters (nprobe; pq_rerank: nprobe and k_factor, cheapest
first) are raised until it reaches `TARGET_RECALL`.

Index kinds (`--kind`): `flat` (exact, fp32), `ivf` (IVF over fp32 rows), `hnsw`, and three
compressed kinds for large collections, all IVF with an HNSW coarse quantizer (cheap assignment
of millions of rows): `sq8` - 8-bit scalar codes of each row's residual to its list centroid (dim
bytes, 264 per 256-d row with its id), `pq` - 4-bit fast-scan PQ codes (dim/8 bytes) re-ranked by
4-bit scalar codes (dim/2 bytes): 177 bytes per row, lower recall on near-duplicate rows (OPQ in
front of PQ trained 30x slower here for no recall gain; 8-bit PQ64 did worse than SQ8), and
`pq_rerank` - the same fast-scan codes (dim/8 bytes + the id in RAM), whose k_factor * k candidates
are re-scored exactly against fp16 rows memory-mapped from disk (serve.index.rerank): ~40 bytes a
row resident instead of sq8's ~265, at sq8's recall and latency (benchmarks/RESULTS.md, issue 23).
`auto` is exact up to `FLAT_MAX_ROWS`, `pq_rerank` above. Index folders of every kind written
before stay readable (their index.json has no `rerank`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from egovlp.errors import InputError
from serve.index.rerank import VECTORS_FILE, RerankedIndex, VectorsWriter
from serve.index.store import (
    FILE_COLUMNS,
    ROWS_FILE,
    RowsWriter,
    faiss_module,
    gpu_available,
    publish,
    set_search_params,
)

logger = logging.getLogger(__name__)

FLAT_MAX_ROWS = 50_000  # exact search on 50k x 256 floats costs ~5 ms per query on one core
TARGET_RECALL = 0.95
RECALL_QUERIES = 200
CHUNK_ROWS = 65_536  # rows per add() / per rows-table batch (64 MiB of fp32 at 256-d)
TRAIN_PER_LIST = 40  # k-means training points per IVF list
KMEANS_ITERS = 10
MIN_TRAIN = 65_536  # PQ / OPQ codebooks want at least this many points
REFINE_K_FACTOR = 4
RERANK_K_FACTORS = (8, 16, 24, 32, 48, 64)  # pq_rerank: candidates per hit re-scored from fp16 rows
# one re-scored candidate (a row read from the memory map, cast, dotted) costs about as much as
# scanning this many fast-scan codes (1M rows, PQ64x4fs: ~1.5 us vs ~10 ns; benchmarks/RESULTS.md)
CANDIDATE_COST_CODES = 150
KINDS = ("auto", "flat", "ivf", "hnsw", "sq8", "pq", "pq_rerank")


@dataclass
class Chunk:
    """Up to CHUNK_ROWS normalized rows [c, D] and their row-table columns (each [c])."""

    vectors: np.ndarray
    file_id: np.ndarray
    row: np.ndarray
    start: np.ndarray
    end: np.ndarray


class VectorSource(Protocol):
    """What a build reads: the files table, a training sample, then every row in chunks."""

    dim: int
    count: int
    files: dict[str, list]
    identity: dict[str, Any]

    def sample(self, n: int, seed: int) -> np.ndarray: ...  # [n, D] normalized rows

    def chunks(self) -> Iterator[Chunk]: ...


@dataclass
class BuildPlan:
    kind: str
    factory: str
    nlist: int | None = None
    search_grid: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rerank(self) -> bool:
        """Candidates re-scored against fp16 rows on disk (serve.index.rerank)."""
        return self.kind == "pq_rerank"


def default_nlist(n: int) -> int:
    """~2 sqrt(N) lists, a power of two, at most N / 39 (FAISS' points-per-centroid rule)."""
    want = max(1, min(2 * math.sqrt(n), n / 39))
    return max(1, 2 ** round(math.log2(want)))


def fast_scan_m(dim: int) -> int | None:
    """Sub-quantizers of 4-bit fast-scan PQ: dim/4 (4 dims each, 2 bits a dim), even and dividing dim."""
    m = max(1, dim // 4)
    while dim % m or m % 2:
        m -= 1
        if m < 2:
            return None
    return m


def pq_factory(dim: int, nlist: int) -> str:
    """IVF (HNSW coarse quantizer) + 4-bit fast-scan PQ + 4-bit SQ re-ranking (OPQ: see RESULTS.md)."""
    m = fast_scan_m(dim)
    return f"IVF{nlist}_HNSW32,PQ{m}x4fs,Refine(SQ4)" if m else f"IVF{nlist},SQ8"


def plan_index(n: int, dim: int, kind: str = "auto", nlist: int | None = None) -> BuildPlan:
    if kind not in KINDS:
        raise InputError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = "flat" if n <= FLAT_MAX_ROWS else "pq_rerank"
    if kind == "flat":
        return BuildPlan("flat", "Flat")
    if kind == "hnsw":
        grid = [{"efSearch": v} for v in (16, 32, 64, 128, 256, 512)]
        return BuildPlan("hnsw", "HNSW32", search_grid=grid)
    if nlist is not None and nlist > n:
        raise InputError(f"--nlist {nlist}: more lists than the {n} rows to index")
    nlist = nlist or default_nlist(n)
    probes = [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256) if v < nlist] + [min(nlist, 512)]
    if kind == "ivf":
        return BuildPlan("ivf", f"IVF{nlist},Flat", nlist, [{"nprobe": p} for p in probes])
    if kind == "sq8":  # 8-bit scalar codes of the residual to the list centroid: dim bytes per row
        return BuildPlan("sq8", f"IVF{nlist}_HNSW32,SQ8", nlist, [{"nprobe": p} for p in probes])
    if kind == "pq_rerank":  # fast-scan PQ proposes k_factor * k rows, fp16 rows on disk re-score them
        m = fast_scan_m(dim)
        if m is None:
            raise InputError(f"--kind pq_rerank: dim {dim} has no even divisor for fast-scan PQ")
        grid = [{"nprobe": p, "k_factor": f} for p in probes for f in RERANK_K_FACTORS]
        grid.sort(key=lambda g: g["nprobe"] * n / nlist + CANDIDATE_COST_CODES * 10 * g["k_factor"])
        return BuildPlan("pq_rerank", f"IVF{nlist}_HNSW32,PQ{m}x4fs", nlist, grid)
    factory = pq_factory(dim, nlist)
    extra = {"k_factor_rf": REFINE_K_FACTOR} if "Refine" in factory else {}
    return BuildPlan("pq", factory, nlist, [{"nprobe": p, **extra} for p in probes])


def _train_size(plan: BuildPlan, n: int) -> int:
    if plan.kind == "flat" or plan.kind == "hnsw":
        return 0
    want = (plan.nlist or 1) * TRAIN_PER_LIST
    if plan.kind in ("pq", "sq8", "pq_rerank"):
        want = max(want, MIN_TRAIN)
    return min(n, want)


def create_index(plan: BuildPlan, dim: int, train: np.ndarray | None, use_gpu: bool = False):
    """An empty, trained FAISS index for `plan` (training on the GPU when there is one)."""
    faiss = faiss_module()
    index = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if plan.kind == "hnsw":
        index.hnsw.efConstruction = 80
    if not index.is_trained:
        if train is None or len(train) == 0:
            raise InputError("no rows to train the index on")
        ivf = faiss.extract_index_ivf(index) if plan.nlist else None
        if ivf is not None:
            ivf.cp.niter = KMEANS_ITERS
        if ivf is not None and use_gpu:
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(dim))
        started = time.perf_counter()
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        logger.info(
            "trained %s on %d rows in %.1f s", plan.factory, len(train), time.perf_counter() - started
        )
    return index


class ExactTopK:
    """A running exact top-k (inner product) of a few queries over rows that arrive in chunks."""

    def __init__(self, queries: np.ndarray, k: int = 10) -> None:
        faiss = faiss_module()
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self.heap = faiss.ResultHeap(len(queries), k, keep_max=True)
        self.seen = 0

    def add(self, vectors: np.ndarray) -> None:
        faiss = faiss_module()
        k = min(self.k, len(vectors))
        scores, ids = faiss.knn(self.queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
        if k < self.k:  # pad so the heap always gets [Q, k]
            pad = self.k - k
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        ids = np.where(ids >= 0, ids + self.seen, -1)
        self.heap.add_result(np.ascontiguousarray(scores, np.float32), np.ascontiguousarray(ids, np.int64))
        self.seen += len(vectors)

    def result(self) -> np.ndarray:
        self.heap.finalize()
        return self.heap.I  # [Q, k]


def recall_at_k(index, queries: np.ndarray, truth: np.ndarray) -> float:
    """Mean |index top-k ∩ exact top-k| / k over the queries."""
    k = truth.shape[1]
    _, got = index.search(np.ascontiguousarray(queries, np.float32), k)
    per = [
        len(set(a[a >= 0].tolist()) & set(b[b >= 0].tolist())) / max(1, int((a >= 0).sum()))
        for a, b in zip(truth, got, strict=True)
    ]
    return float(np.mean(per)) if per else 1.0


def tune(index, plan: BuildPlan, queries: np.ndarray, truth: np.ndarray, target: float) -> tuple[dict, float]:
    """The cheapest grid point whose recall@10 reaches `target` (else the last one), and its recall."""
    if not plan.search_grid:
        return {}, recall_at_k(index, queries, truth)
    recall, params = 0.0, plan.search_grid[-1]
    for params in plan.search_grid:
        set_search_params(index, params)
        recall = recall_at_k(index, queries, truth)
        if recall >= target:
            break
    return dict(params), recall


def fill(
    index,
    source_chunks: Iterator[Chunk],
    rows: RowsWriter,
    exact: list[ExactTopK] = (),
    vectors: VectorsWriter | None = None,
) -> int:
    """Stream chunks into the FAISS index and the rows table (and the fp16 rows of a re-ranked kind,
    the exact top-ks); returns rows added."""
    added = 0
    for chunk in source_chunks:
        index.add(chunk.vectors)
        rows.write(chunk.file_id, chunk.row, chunk.start, chunk.end)
        if vectors is not None:
            vectors.write(chunk.vectors)
        for topk in exact:
            topk.add(chunk.vectors)
        added += len(chunk.vectors)
        if added % (CHUNK_ROWS * 16) < len(chunk.vectors):
            logger.info("added %d rows", added)
    return added


def build_from_source(
    source: VectorSource,
    out: Path,
    kind: str = "auto",
    nlist: int | None = None,
    use_gpu: bool | None = None,
    target: float = TARGET_RECALL,
    probe: ExactTopK | None = None,
) -> dict[str, Any]:
    """Train on a sample of `source`, fill from its chunks, tune, and publish INDEX_DIR at `out`.

    `probe` (optional) gets the exact top-k of its own queries over the same stream (benchmarks).
    """
    if source.count == 0:
        raise InputError("no rows to index")
    use_gpu = gpu_available() if use_gpu is None else use_gpu
    started = time.perf_counter()
    plan = plan_index(source.count, source.dim, kind, nlist)
    n_train = _train_size(plan, source.count)
    train = source.sample(n_train, seed=0) if n_train else None
    index = create_index(plan, source.dim, train, use_gpu)
    queries = source.sample(min(RECALL_QUERIES, source.count), seed=1)
    del train
    exact = ExactTopK(queries, min(10, source.count))
    rows = RowsWriter(out / ROWS_FILE)
    vectors = VectorsWriter(out / VECTORS_FILE, source.count, source.dim) if plan.rerank else None
    try:
        probes = [exact] + ([probe] if probe is not None else [])
        added = fill(index, source.chunks(), rows, probes, vectors)
        if added != source.count:
            raise InputError(f"the source promised {source.count} rows but gave {added}")
        if vectors is not None:  # tuned as it will be served: candidates re-scored from the file
            stored, mapping = vectors.open()
            index = RerankedIndex(index, stored, k_factor=1, mapping=mapping)
        params, recall = tune(index, plan, queries, exact.result(), target)
    except BaseException:
        rows.abort()
        if vectors is not None:
            vectors.abort()
        raise
    info = {
        "dim": source.dim,
        **{k: source.identity.get(k) for k in ("model", "weights_hash", "config_hash", "precision")},
        "kind": plan.kind,
        "factory": plan.factory,
        "search_params": params,
        "count": int(index.ntotal),
        "recall_at_10": recall,
        "build_seconds": round(time.perf_counter() - started, 2),
        "bytes_per_vector": None,
    }
    if vectors is not None:
        info["rerank"] = {"file": VECTORS_FILE, "dtype": "float16"}
    publish(out, index, rows, source.files, info, vectors)
    return info


def files_dict(rows: list[tuple]) -> dict[str, list]:
    """[(name, clip_uid, video_uid, source, video_start), ...] -> the files table's columns."""
    return {c: [r[i] for r in rows] for i, c in enumerate(FILE_COLUMNS)}

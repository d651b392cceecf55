"""Index at scale: build `egovlp index`'s compressed index from N synthetic clustered vectors, streamed.

    python benchmarks/bench_index.py --rows 200000              # a quick check
    nice -n 10 python benchmarks/bench_index.py --rows 5000000  # the issue's goal size

The vectors imitate extracted clip features: topic centres (one per 8 clips), each with its own 16-dimensional
subspace of variation (embeddings of one kind of scene vary along few directions); clips of 512
rows around a clip centre near one topic, consecutive rows correlated (an AR(1) walk in the topic's
subspace, like features at 1.875 rows/s), a little isotropic noise, every row L2-normalized. They are generated chunk by chunk from seeds, never all in
memory, and go through the same build as `egovlp index` (serve.index.build.build_from_source).
Queries are held-out rows of fresh clips; the exact top-10 of every query is kept over the same
stream. Then a fresh process loads the index folder (serve.index.store.load_index) and measures its
RSS and single-query latency at k=10 with one FAISS thread. The last line is one JSON object:
recall_at_10, p50_ms, p99_ms, build_s, bytes_per_vector, rss_mb, rss_anon_mb, rss_file_backed_mb
(+ the curve and details). Re-time a kept index (`--out DIR`) without rebuilding it:

    python benchmarks/bench_index.py --measure DIR/index DIR/queries.npy DIR/truth.npy --curve 8 16 --k-factors 8 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve.index.build import CHUNK_ROWS, Chunk, ExactTopK, build_from_source, files_dict  # noqa: E402
from serve.index.store import l2_normalize  # noqa: E402

TOPICS_PER_CLIP = 1 / 8  # about 8 clips per topic
RANK = 16  # directions of variation per topic
CLIP_ROWS = 512
CLIP_SPREAD = 0.5  # clip centre around its topic (in the topic's subspace)
ROW_SPREAD = 0.35  # rows around their clip centre (in the topic's subspace)
NOISE = 0.05  # isotropic noise (norm)
AR = 0.9  # correlation of consecutive rows


class SyntheticSource:
    """N clustered rows in clips of CLIP_ROWS, generated per chunk from a seed (the VectorSource protocol)."""

    def __init__(self, rows: int, dim: int, seed: int = 0) -> None:
        self.count, self.dim, self.seed = rows, dim, seed
        rng = np.random.default_rng(seed)
        clips = -(-rows // CLIP_ROWS)
        self.n_topics = max(4, int(clips * TOPICS_PER_CLIP))
        self.topics = l2_normalize(rng.standard_normal((self.n_topics, dim)))
        basis = rng.standard_normal((self.n_topics, RANK, dim)).astype(np.float32)
        self.basis = basis / np.linalg.norm(basis, axis=2, keepdims=True)  # [K, r, D] unit directions
        self.files = files_dict(
            [
                (f"clip{i:07d}", f"clip{i:07d}", f"video{i // 8:06d}", f"video{i // 8:06d}.mp4", 0.0)
                for i in range(clips)
            ]
        )
        self.identity = {"model": "synthetic", "weights_hash": None, "config_hash": None, "precision": None}

    def clips(self, first: int, count: int, seed: int, rows: int = CLIP_ROWS) -> np.ndarray:
        """`count` clips of `rows` rows -> [count * rows, D] normalized."""
        rng = np.random.default_rng([seed, first])
        scale = 1.0 / np.sqrt(RANK)
        topic = rng.integers(0, self.n_topics, count)
        basis = self.basis[topic]  # [c, r, D]
        offset = CLIP_SPREAD * scale * rng.standard_normal((count, RANK), dtype=np.float32)
        walk = np.empty((count, rows, RANK), np.float32)  # [c, T, r]
        walk[:, 0] = rng.standard_normal((count, RANK), dtype=np.float32)
        step = np.sqrt(1 - AR * AR)
        for t in range(1, rows):
            walk[:, t] = AR * walk[:, t - 1] + step * rng.standard_normal((count, RANK), dtype=np.float32)
        coords = offset[:, None, :] + ROW_SPREAD * scale * walk  # [c, T, r]
        out = self.topics[topic][:, None, :] + np.einsum("ctr,crd->ctd", coords, basis)
        out += NOISE / np.sqrt(self.dim) * rng.standard_normal(out.shape, dtype=np.float32)
        return l2_normalize(out.reshape(count * rows, self.dim))

    def sample(self, n: int, seed: int) -> np.ndarray:
        """n rows of fresh clips (the same distribution as the indexed rows), 8 rows from each of n/8 clips,
        so a few hundred queries cover many topics."""
        clips = max(1, -(-n // 8))
        rows = self.clips(0, clips, self.seed + 1000 + seed, rows=8)
        return rows[np.random.default_rng(seed).permutation(len(rows))[:n]]

    def chunks(self) -> Iterator[Chunk]:
        per_chunk = max(1, CHUNK_ROWS // CLIP_ROWS)
        total_clips = len(self.files["name"])
        for first in range(0, total_clips, per_chunk):
            count = min(per_chunk, total_clips - first)
            vectors = self.clips(first, count, self.seed)
            n = min(len(vectors), self.count - first * CLIP_ROWS)
            file_id = np.repeat(np.arange(first, first + count, dtype=np.int32), CLIP_ROWS)[:n]
            row = np.tile(np.arange(CLIP_ROWS, dtype=np.int32), count)[:n]
            start = row / 1.875
            yield Chunk(vectors[:n], file_id, row, start, start + 1 / 1.875)


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth.tolist(), got.tolist(), strict=True)])
    )


def _latencies(idx, queries: np.ndarray, searches: int) -> list[float]:
    times = []
    for i in range(searches):
        q = queries[i % len(queries)][None]
        started = time.perf_counter()
        idx.search(q, 10)  # FAISS + the metadata of the 10 hits from the memory-mapped rows
        times.append((time.perf_counter() - started) * 1000)
    return times


def curve(
    idx, queries: np.ndarray, truth: np.ndarray, nprobes: list[int], searches: int, k_factors: list[int]
) -> list[dict]:
    """Recall@10 and single-query latency at each nprobe (x each k_factor of a re-ranked index; the
    index's other parameters kept)."""
    from serve.index.store import set_search_params

    points = []
    for nprobe in nprobes:
        for k_factor in k_factors or [None]:
            params = {"nprobe": nprobe} | ({"k_factor": k_factor} if k_factor else {})
            set_search_params(idx.index, params)
            _, got = idx.index.search(queries, 10)
            times = _latencies(idx, queries, searches)
            points.append(
                {
                    **params,
                    "recall_at_10": round(_recall(got, truth), 4),
                    "p50_ms": round(float(np.percentile(times, 50)), 3),
                    "p99_ms": round(float(np.percentile(times, 99)), 3),
                }
            )
    return points


def _rss_mb() -> dict[str, float]:
    """Resident memory split as the kernel counts it: anonymous (the heap: FAISS codes) and
    file-backed (memory-mapped rows table / fp16 rows, libraries; the kernel can drop these)."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[name] = int(value.split()[0]) / 1024  # kB
    return {
        "rss_mb": round(fields["VmRSS"], 1),
        "rss_anon_mb": round(fields.get("RssAnon", 0.0), 1),
        "rss_file_backed_mb": round(fields.get("RssFile", 0.0) + fields.get("RssShmem", 0.0), 1),
    }


def measure(
    index_dir: str,
    queries_path: str,
    truth_path: str,
    searches: int,
    nprobes: list[int],
    k_factors: list[int] = (),
) -> dict:
    """In a fresh process: load the index, RSS, recall of the loaded index, per-query latency at the
    parameters in index.json, then the recall/latency curve over `nprobes` x `k_factors`."""
    import faiss

    from serve.index.store import load_index

    faiss.omp_set_num_threads(1)
    try:  # the build ran under `nice`; time the searches at normal priority
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:
        pass
    idx = load_index(index_dir, use_gpu=False)
    after_load = _rss_mb()
    queries, truth = np.load(queries_path), np.load(truth_path)
    _, got = idx.index.search(queries, 10)
    recall = _recall(got, truth)
    times = _latencies(idx, queries, searches)
    after_search = _rss_mb()  # after the searches: the pages of the rows (and fp16 rows) they touched
    points = curve(idx, queries, truth, nprobes, searches, list(k_factors)) if nprobes else []
    return {
        "recall_at_10": round(recall, 4),
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
        "search_params": idx.info.get("search_params"),
        **after_search,
        "rss_after_load_mb": after_load["rss_mb"],
        "rss_after_curve": _rss_mb(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "curve": points,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument(
        "--kind", default="auto", help="index kind for serve.index.build (auto: what `egovlp index` picks)"
    )
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--searches", type=int, default=2000)
    p.add_argument("--out", default=None, help="keep the index folder here (default: a temp folder)")
    p.add_argument(
        "--curve",
        type=int,
        nargs="*",
        default=[2, 4, 8, 16],
        help="nprobe values of the recall/latency curve (IVF kinds; none: skip it)",
    )
    p.add_argument(
        "--k-factors",
        type=int,
        nargs="*",
        default=[],
        help="k_factor values of the curve for a re-ranked kind (pq_rerank), each at every nprobe",
    )
    p.add_argument("--measure", nargs=3, metavar=("INDEX_DIR", "QUERIES", "TRUTH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.searches, args.curve, args.k_factors)))
        return 0
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    source = SyntheticSource(args.rows, args.dim)
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        out = Path(args.out or tmp) / "index"
        out.mkdir(parents=True, exist_ok=True)
        queries = source.sample(args.queries, seed=7)
        probe = ExactTopK(queries, 10)
        started = time.perf_counter()
        info = build_from_source(source, out, args.kind, args.nlist, use_gpu=None, probe=probe)
        build_s = time.perf_counter() - started
        # queries and their exact answers sit beside the index, so `--measure` can re-time it later
        q_path, t_path = out.parent / "queries.npy", out.parent / "truth.npy"
        np.save(q_path, queries)
        np.save(t_path, probe.result())
        cmd = [
            sys.executable,
            __file__,
            "--searches",
            str(args.searches),
            "--measure",
            str(out),
            str(q_path),
            str(t_path),
        ]
        cmd += ["--curve", *map(str, args.curve if info.get("kind") not in ("flat", "hnsw") else [])]
        cmd += ["--k-factors", *map(str, args.k_factors if info.get("rerank") else [])]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        measured = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
    result = {
        **measured,
        "build_s": round(build_s, 1),
        "bytes_per_vector": info["bytes_per_vector"],
        "rows": args.rows,
        "dim": args.dim,
        "factory": info["factory"],
        "search_params": info["search_params"],
        "build_recall_at_10": round(info["recall_at_10"], 4),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

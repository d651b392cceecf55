"""`egovlp index --kind pq_rerank`: PQ candidates re-scored exactly against the fp16 rows on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from serve_testlib import write_features

from egovlp.errors import InputError
from serve.index.cli import add_to_index, build_index, l2_normalize, load_index
from serve.index.rerank import VECTORS_FILE, RerankedIndex
from serve.index.store import set_search_params

DIM, NLIST = 32, 16


def _walks(clips: int, rows: int, seed: int) -> np.ndarray:
    """Clips of near-duplicate consecutive rows (a slow walk around a clip centre), like features."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clips, 1, DIM))
    steps = 0.08 * rng.standard_normal((clips, rows, DIM)).cumsum(axis=1)
    return (centres + steps).reshape(clips * rows, DIM).astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank")
    data = _walks(40, 100, seed=0)
    for i in range(4):
        write_features(root / "f", f"c{i}", data[i * 1000 : (i + 1) * 1000], "h1", weights_hash="w")
    info = build_index(root / "f", root / "pq", kind="pq_rerank", nlist=NLIST)
    build_index(root / "f", root / "flat", kind="flat")
    return root, data, info


def test_reranked_top_k_is_exact_where_candidates_cover_the_truth(built):
    root, data, info = built
    assert info["kind"] == "pq_rerank" and info["rerank"]["file"] == VECTORS_FILE
    assert info["bytes_per_vector"] < DIM  # PQ codes + id in RAM; the fp16 rows stay on disk
    stored = np.load(root / "pq" / VECTORS_FILE, mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape == (4000, DIM)
    idx, flat = load_index(root / "pq", use_gpu=False), load_index(root / "flat", use_gpu=False)
    assert isinstance(idx.index, RerankedIndex)
    set_search_params(idx.index, {"nprobe": NLIST, "k_factor": 30})  # 300 candidates from every list
    queries = l2_normalize(data[::97] + 0.01)
    exact = stored.astype(np.float32) @ queries.T  # [N, Q]: the exact scores against the stored rows
    truth = np.argsort(-exact, axis=0, kind="stable")[:10].T  # [Q, 10]
    _, candidates = idx.index.index.search(queries, 300)
    covered = [set(t) <= set(c) for t, c in zip(truth.tolist(), candidates.tolist(), strict=True)]
    assert all(covered)
    scores, ids = idx.index.search(queries, 10)
    assert (ids == truth).all()
    np.testing.assert_allclose(scores, np.take_along_axis(exact.T, truth, axis=1), rtol=1e-5, atol=1e-6)
    fp32_scores, fp32_ids = flat.index.search(queries, 10)  # fp16 rows: the same top-10 as fp32, nearly
    overlap = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), fp32_ids.tolist(), strict=True)]
    )
    assert overlap >= 0.95
    np.testing.assert_allclose(scores, fp32_scores, atol=2e-3)
    idx.index.release()  # the mapped pages dropped (RSS): the rows read again, the same answer
    assert (idx.index.search(queries, 10)[1] == ids).all() and idx.index.since_release == len(queries)
    _, pq_only = idx.index.index.search(queries, 10)  # the PQ ranking alone is not exact here
    assert (pq_only != truth).any()
    hits = idx.search(queries[:1], 3)[0]
    assert [h["row"] for h in hits] == [int(i) % 1000 for i in truth[0, :3]]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


def test_build_tunes_recall_and_add_extends_the_rows_file(built, tmp_path):
    import shutil

    root, data, info = built
    assert info["recall_at_10"] >= 0.95 and set(info["search_params"]) == {"nprobe", "k_factor"}
    shutil.copytree(root / "pq", tmp_path / "pq")
    extra = _walks(1, 60, seed=5)
    write_features(tmp_path / "new", "fresh", extra, "h1", weights_hash="w")
    assert add_to_index(tmp_path / "new", tmp_path / "pq")["added"] == 60
    idx = load_index(tmp_path / "pq", use_gpu=False)
    assert len(idx) == 4060 and idx.index.vectors.shape == (4060, DIM)
    hit = idx.search(extra[17:18], 1)[0][0]
    assert (hit["clip_uid"], hit["row"]) == ("fresh", 17)
    assert not [p for p in (tmp_path / "pq").iterdir() if p.name.endswith(".tmp")]


def test_missing_or_wrong_rows_file_is_one_line(built, tmp_path, capsys):
    import shutil

    from egovlp.cli import run

    root, _, _ = built
    shutil.copytree(root / "pq", tmp_path / "pq")
    (tmp_path / "pq" / VECTORS_FILE).unlink()
    with pytest.raises(InputError, match=f"{VECTORS_FILE} missing"):
        load_index(tmp_path / "pq", use_gpu=False)
    write_features(tmp_path / "new", "fresh", _walks(1, 5, seed=6), "h1", weights_hash="w")
    argv = ["index", "--features", str(tmp_path / "new"), "--out", str(tmp_path / "pq"), "--add"]
    try:
        code = run(argv)
    except SystemExit as stop:
        code = int(stop.code)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and VECTORS_FILE in err and "Traceback" not in err, err
    np.save(tmp_path / "pq" / VECTORS_FILE, np.zeros((10, DIM), np.float16))  # another index's rows
    with pytest.raises(InputError, match=r"shape \(10, 32\)"):
        load_index(tmp_path / "pq", use_gpu=False)


def test_index_json_without_rerank_loads_as_before(built, tmp_path):
    """Folders written before pq_rerank existed (sq8 and the rest) have no `rerank` entry."""
    root, data, _ = built
    build_index(root / "f", tmp_path / "sq8", kind="sq8", nlist=NLIST)
    info = json.loads((tmp_path / "sq8" / "index.json").read_text())
    assert "rerank" not in info and not (tmp_path / "sq8" / VECTORS_FILE).exists()
    idx = load_index(tmp_path / "sq8", use_gpu=False)
    assert not isinstance(idx.index, RerankedIndex)
    assert idx.search(data[1234:1235], 1)[0][0]["row"] == 234


def test_auto_picks_pq_rerank_above_the_exact_limit():
    from serve.index.build import CANDIDATE_COST_CODES, FLAT_MAX_ROWS, plan_index

    assert plan_index(FLAT_MAX_ROWS, 256).kind == "flat"
    plan = plan_index(5_000_000, 256)
    assert plan.kind == "pq_rerank" and plan.factory == "IVF4096_HNSW32,PQ64x4fs" and plan.rerank
    costs = [
        g["nprobe"] * 5_000_000 / 4096 + CANDIDATE_COST_CODES * 10 * g["k_factor"] for g in plan.search_grid
    ]
    assert costs == sorted(costs)  # tuning stops at the cheapest point that reaches its recall
    with pytest.raises(InputError, match="pq_rerank"):
        plan_index(100_000, 7, "pq_rerank")  # fast-scan PQ wants an even number of sub-quantizers

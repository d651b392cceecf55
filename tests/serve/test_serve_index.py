"""`egovlp index`: exact vs IVF recall, metadata alignment, incremental add, refused inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from serve_testlib import write_features

from egovlp.errors import InputError
from serve.index.cli import add_to_index, build_index, l2_normalize, load_index, main
from serve.index.features import FeatureFolderSource


def _clustered(n: int, dim: int = 16, centers: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim))
    return (c[rng.integers(0, centers, n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)


def test_flat_index_is_exact_and_metadata_aligned(tmp_path):
    feats = tmp_path / "f"
    a = _clustered(7, seed=1)
    b = _clustered(5, seed=2)
    write_features(feats, "clipA", a, "h1", video_uid="vA")
    write_features(feats, "clipB", b, "h1", fmt="npy", video_uid="vB")
    info = build_index(feats, tmp_path / "idx")
    assert info["kind"] == "flat" and info["count"] == 12 and info["recall_at_10"] == 1.0
    idx = load_index(tmp_path / "idx", use_gpu=False)
    hits = idx.search(b[3:4], 3)[0]
    assert hits[0]["clip_uid"] == "clipB" and hits[0]["row"] == 3 and hits[0]["video_uid"] == "vB"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert hits[0]["start"] == pytest.approx(3 * 16 / 30) and hits[0]["video_start"] == pytest.approx(
        100 + 3 * 16 / 30
    )
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_ivf_recall_close_to_exact(tmp_path, capsys):
    feats = tmp_path / "f"
    data = _clustered(3000)
    for i in range(3):
        write_features(feats, f"c{i}", data[i * 1000 : (i + 1) * 1000], "h1")
    assert (
        main(["--features", str(feats), "--out", str(tmp_path / "ivf"), "--kind", "ivf", "--nlist", "32"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["kind"] == "ivf" and printed["count"] == 3000
    assert printed["recall_at_10"] >= 0.95 and 1 <= printed["search_params"]["nprobe"] <= 32
    ivf = load_index(tmp_path / "ivf", use_gpu=False)
    build_index(feats, tmp_path / "flat", kind="flat")
    flat = load_index(tmp_path / "flat", use_gpu=False)
    queries = l2_normalize(data[:50])
    got = ivf.search(queries, 10)
    want = flat.search(queries, 10)
    overlap = np.mean(
        [
            len({(h["clip_uid"], h["row"]) for h in g} & {(h["clip_uid"], h["row"]) for h in w}) / 10
            for g, w in zip(got, want, strict=True)
        ]
    )
    assert overlap >= 0.9


def test_incremental_add(tmp_path):
    feats, new = tmp_path / "f", tmp_path / "new"
    write_features(feats, "old", _clustered(4, seed=3), "h1")
    build_index(feats, tmp_path / "idx")
    extra = _clustered(3, seed=4)
    write_features(new, "fresh", extra, "h1")
    write_features(new, "old", _clustered(4, seed=3), "h1")  # already indexed: skipped, not duplicated
    assert main(["--features", str(new), "--out", str(tmp_path / "idx"), "--add"]) == 0
    idx = load_index(tmp_path / "idx", use_gpu=False)
    assert len(idx) == 7 and sorted(idx.file_names) == ["fresh", "old"]
    hit = idx.search(extra[1:2], 1)[0][0]
    assert (hit["clip_uid"], hit["row"]) == ("fresh", 1)
    write_features(tmp_path / "other", "x", _clustered(2), "h2")
    with pytest.raises(InputError, match="config_hash"):
        add_to_index(tmp_path / "other", tmp_path / "idx")
    assert len(load_index(tmp_path / "idx", use_gpu=False)) == 7  # refused add left it intact


def test_failed_add_leaves_the_previous_index_whole(tmp_path, monkeypatch):
    import errno

    import serve.index.store as store

    feats, new = tmp_path / "f", tmp_path / "new"
    write_features(feats, "old", _clustered(4, seed=3), "h1")
    build_index(feats, tmp_path / "idx")
    write_features(new, "fresh", _clustered(3, seed=4), "h1")

    def disk_full(path, files):  # the files table is written after the index and the rows
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store, "write_files_table", disk_full)
    with pytest.raises(InputError, match="cannot write"):
        add_to_index(new, tmp_path / "idx")
    idx = load_index(tmp_path / "idx", use_gpu=False)
    assert len(idx) == 4 and idx.file_names == ["old"]
    assert idx.search(_clustered(4, seed=3)[2:3], 1)[0][0]["row"] == 2
    assert not [p for p in (tmp_path / "idx").iterdir() if p.name.endswith(".tmp")]


def test_bad_feature_folders(tmp_path, caplog):
    feats = tmp_path / "f"
    write_features(feats, "good", _clustered(3), "h1")
    np.save(feats / "orphan.npy", np.zeros((2, 16), np.float32))  # no sidecar: skipped with a warning
    fs = FeatureFolderSource(feats)
    assert (fs.count, fs.dim) == (3, 16) and "orphan" in caplog.text
    write_features(feats, "wide", np.ones((2, 8), np.float32), "h1")
    with pytest.raises(InputError, match="wide.*dim"):
        FeatureFolderSource(feats)
    mixed = tmp_path / "mixed"
    write_features(mixed, "a", _clustered(2), "h1")
    write_features(mixed, "b", _clustered(2), "h2")
    with pytest.raises(InputError, match="config_hash"):
        FeatureFolderSource(mixed)
    with pytest.raises(InputError, match="not an index folder"):
        load_index(tmp_path, use_gpu=False)
    with pytest.raises(InputError, match="no feature files"):
        build_index(_empty(tmp_path), tmp_path / "o")


def _empty(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _exit(argv: list[str]) -> int:
    from egovlp.cli import run

    try:
        return run(argv)
    except SystemExit as stop:
        return int(stop.code)


def test_index_refuses_bad_inputs_in_one_line(tmp_path, capsys):
    feats = tmp_path / "f"
    write_features(feats, "a", _clustered(5), "h1", weights_hash="w1")
    write_features(feats, "b", _clustered(5, seed=2), "h1", weights_hash="w2")  # other weights
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    corrupt = tmp_path / "corrupt"
    good = tmp_path / "good"
    write_features(good, "a", _clustered(5), "h1", weights_hash="w1")
    build_index(good, corrupt)
    (corrupt / "index.faiss").write_bytes(b"\x00garbage")
    typed = tmp_path / "typed"
    write_features(typed, "a", _clustered(5), "h1")
    side = json.loads((typed / "a.json").read_text())
    (typed / "a.json").write_text(json.dumps(side | {"num_rows": "five"}))
    cases = [
        (["--features", str(feats), "--out", str(tmp_path / "o")], ["a.json", "b.json", "weights"]),
        (["--features", str(good), "--out", str(a_file)], ["--out", "is a file"]),
        (["--features", str(good), "--out", str(tmp_path / "o"), "--nlist", "-1"], ["--nlist"]),
        (["--features", str(good), "--out", str(corrupt), "--add"], ["index.faiss"]),
        (["--features", str(typed), "--out", str(tmp_path / "o")], ["a.json", "num_rows"]),
        (["--features", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], ["--features"]),
    ]
    for argv, words in cases:
        assert _exit(["index", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert all(w in err for w in words), (words, err)


def test_compressed_kinds_stream_and_add(tmp_path):
    feats = tmp_path / "f"
    data = _clustered(4000, dim=32, centers=40)
    for i in range(4):
        write_features(feats, f"c{i}", data[i * 1000 : (i + 1) * 1000], "h1", weights_hash="w")
    floors = {"sq8": 0.9, "pq": 0.2}  # pq: 4-bit codes blur near-duplicate rows (benchmarks/RESULTS.md)
    for kind in ("sq8", "pq"):
        info = build_index(feats, tmp_path / kind, kind=kind, nlist=16)
        assert info["recall_at_10"] >= floors[kind], (kind, info["recall_at_10"])
        assert info["kind"] == kind and info["count"] == 4000 and info["weights_hash"] == "w"
        assert info["bytes_per_vector"] < 4 * 32  # compressed: fewer bytes than the fp32 row
        idx = load_index(tmp_path / kind, use_gpu=False)
        hit = idx.search(data[2500:2501], 1)[0][0]
        assert (hit["clip_uid"], hit["row"]) == ("c2", 500)
    extra = tmp_path / "extra"
    write_features(extra, "new", _clustered(50, dim=32, seed=9), "h1", weights_hash="w")
    added = add_to_index(extra, tmp_path / "sq8")
    assert added["added"] == 50 and len(load_index(tmp_path / "sq8", use_gpu=False)) == 4050


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys):
    import subprocess

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        feats = tmp_path / "f"
        write_features(feats, "a", _clustered(2000, dim=64), "h1")
        assert _exit(["index", "--features", str(feats), "--out", str(tiny / "idx")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cannot write" in err and "Traceback" not in err, err
        assert list((tiny / "idx").iterdir()) == []  # no temp files left behind
    finally:
        subprocess.run(["umount", str(tiny)], check=False)

"""NLQ/MQ extraction end to end on the CPU: exact frames, equality with encode_video, layouts,
resume, bad files, the rank split, bad arguments."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import index_of, write_nlq

from egovlp.errors import InputError
from egovlp.transforms import eval_transform
from egovlp.video import read_frames
from extract.cli import main
from extract.inputs import WorkItem
from extract.manifest import read_manifest
from extract.reader import DecodeStream, probe

SIDECAR_KEYS = {
    "name",
    "clip_uid",
    "video_uid",
    "source",
    "video_start_sec",
    "video_end_sec",
    "fps",
    "window_frames",
    "rows_per_second",
    "num_rows",
    "row_times",
    "dim",
    "model",
    "config_hash",
    "preset",
    "compat",
    "weights_hash",
    "short_side",
    "schema",
    "precision",
}


def _expected(model, path, indices: np.ndarray) -> torch.Tensor:
    """encode_video on the same frames, read and transformed by the library's own functions."""
    clips = [eval_transform(read_frames(path, row.tolist()), model.cfg.video.img_size) for row in indices]
    return model.encode_video(torch.stack(clips))  # [T, 256]


def _run(*args) -> int:
    return main([*map(str, args), "--no-progress", "--workers", "0"])


def _nlq_args(model_dir, nlq_file, videos, out) -> tuple:
    return ("--model", model_dir, "--preset", "nlq", "--input", nlq_file, "--videos", videos, "--out", out)


@pytest.fixture
def nlq_file(tmp_path, index_videos):
    clips = [
        {"video_uid": "vid30", "clip_uid": "clipA", "video_start_sec": 1.0, "video_end_sec": 3.5},
        {"video_uid": "vid25", "clip_uid": "clipB", "video_start_sec": 0.0, "video_end_sec": 4.0},
    ]
    return write_nlq(tmp_path / "nlq_val.json", clips)


def test_decoded_frames_are_the_planned_indices(index_videos):
    job = probe(WorkItem("clipA", str(index_videos / "vid30.mp4"), 1.0, 3.5), "nlq")
    assert job.plan.indices[0].tolist() == [31, 35, 39, 43]  # grid 16k + 4q + 1, start 1.0 s -> +30 frames
    chunks = list(DecodeStream([job], size=32, chunk_rows=3))
    assert [c.row0 for c in chunks] == [0, 3] and chunks[-1].last
    frames = torch.cat([c.frames for c in chunks])  # [T, 4, 3, S, S] uint8
    got = [[index_of(f.permute(1, 2, 0).numpy()) for f in row] for row in frames]
    assert got == job.plan.indices.tolist()
    assert got[0] == [31, 35, 39, 43] and got[-1] == [95, 99, 103, 104]  # 75 grid frames: 30 + 74 is the last


def test_nlq_annotation_pt_matches_encode_video(
    tmp_path, nlq_file, index_videos, micro_model_dir, micro_model
):
    out = tmp_path / "out"
    assert _run(*_nlq_args(micro_model_dir, nlq_file, index_videos, out)) == 0
    feats = torch.load(out / "clipA.pt", weights_only=True)  # what VSLNet loads: a plain tensor
    assert torch.is_tensor(feats) and feats.dtype == torch.float32 and feats.shape == (5, 16)  # ceil(75 / 16)
    meta = json.loads((out / "clipA.json").read_text())
    assert SIDECAR_KEYS <= set(meta)
    assert meta["video_start_sec"] == 1.0 and meta["num_rows"] == 5 and meta["rows_per_second"] == 1.875
    assert meta["config_hash"] == micro_model.cfg.config_hash() and meta["dim"] == 16
    expected = _expected(micro_model, index_videos / "vid30.mp4", np.array(meta["frame_indices"]))
    torch.testing.assert_close(feats, expected, atol=1e-4, rtol=1e-4)
    # the 25 fps clip: 4 s -> 120 grid frames -> 8 rows, frames picked by time
    feats_b = torch.load(out / "clipB.pt", weights_only=True)
    meta_b = json.loads((out / "clipB.json").read_text())
    assert feats_b.shape == (8, 16) and meta_b["source_fps"] == 25.0
    assert meta_b["frame_indices"][0] == [1, 4, 7, 11]  # floor((p + 0.5) / 30 * 25), p = 1, 5, 9, 13
    expected_b = _expected(micro_model, index_videos / "vid25.mp4", np.array(meta_b["frame_indices"]))
    torch.testing.assert_close(feats_b, expected_b, atol=1e-4, rtol=1e-4)
    rows = read_manifest(out / "manifest.parquet")
    assert [(r["name"], r["status"], r["rows"]) for r in rows] == [("clipA", "ok", 5), ("clipB", "ok", 8)]


def test_npy_layout_compat_and_768(tmp_path, index_videos, micro_model_dir):
    out = tmp_path / "out"
    args = ("--model", micro_model_dir, "--preset", "mq", "--input", index_videos, "--out", out)
    code = _run(*args, "--format", "npy", "--compat", "--save-768", "--batch-size", "3")
    assert code == 0
    feats = np.load(out / "vid30.npy")  # ActionFormer: [T, C]
    assert feats.shape == (9, 16) and feats.dtype == np.float32  # int(5 * 1.87 * 4 + 1) // 4
    assert np.load(out / "vid30.768.npy").shape == (9, 32)
    meta = json.loads((out / "vid30.json").read_text())
    assert meta["compat"] is True and meta["rows_per_second"] == 1.87 and meta["preset"] == "mq"
    assert np.abs(feats).sum(1).min() > 0  # no zero rows


def test_resume_skips_complete_and_redoes_truncated(tmp_path, nlq_file, index_videos, micro_model_dir):
    out = tmp_path / "out"
    args = _nlq_args(micro_model_dir, nlq_file, index_videos, out)
    assert _run(*args) == 0
    before_a = torch.load(out / "clipA.pt", weights_only=True)
    mtime_b = os.stat(out / "clipB.pt").st_mtime_ns
    data = (out / "clipA.pt").read_bytes()
    (out / "clipA.pt").write_bytes(data[: len(data) // 2])  # a truncated file from a killed run
    assert _run(*args) == 0
    rows = {r["name"]: r["status"] for r in read_manifest(out / "manifest.parquet")}
    assert rows == {"clipA": "ok", "clipB": "skipped"}
    assert os.stat(out / "clipB.pt").st_mtime_ns == mtime_b
    torch.testing.assert_close(torch.load(out / "clipA.pt", weights_only=True), before_a, atol=0, rtol=0)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_bad_files_are_recorded_and_the_run_goes_on(tmp_path, index_videos, micro_model_dir, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(index_videos / "vid30.mp4", videos / "good.mp4")
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "corrupt.mp4").write_bytes(os.urandom(5000))
    out = tmp_path / "out"
    assert _run("--model", micro_model_dir, "--preset", "nlq", "--input", videos, "--out", out) == 1
    rows = {r["name"]: r for r in read_manifest(out / "manifest.parquet")}
    assert {n: r["status"] for n, r in rows.items()} == {"good": "ok", "empty": "failed", "corrupt": "failed"}
    assert "empty" in rows["empty"]["error"] and rows["corrupt"]["error"]
    assert torch.load(out / "good.pt", weights_only=True).shape == (10, 16)
    assert "2 of 3 inputs failed" in capsys.readouterr().err


def test_bad_arguments_raise_input_error(tmp_path, index_videos, micro_model_dir):
    with pytest.raises(InputError, match="preset"):
        main(
            [
                "--model",
                str(micro_model_dir),
                "--preset",
                "nope",
                "--input",
                str(index_videos),
                "--out",
                str(tmp_path),
            ]
        )
    with pytest.raises(InputError, match="missing"):
        main(
            [
                "--model",
                str(micro_model_dir),
                "--preset",
                "nlq",
                "--input",
                str(tmp_path / "missing"),
                "--out",
                str(tmp_path),
            ]
        )


def test_resume_after_sigkill_gives_identical_outputs(tmp_path, index_videos, micro_model_dir):
    import signal
    import subprocess
    import sys
    import time

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        shutil.copy(index_videos / "vid30.mp4", videos / f"v{i}.mp4")
    argv = [
        "--model",
        str(micro_model_dir),
        "--preset",
        "nlq",
        "--input",
        str(videos),
        "--no-progress",
        "--workers",
        "0",
    ]
    killed = tmp_path / "killed"
    # a real process killed with SIGKILL as soon as its first output is complete
    cmd = [sys.executable, "-m", "extract.cli", *argv, "--out", str(killed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same numerics as this process
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(killed.glob("v*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done_before = len(list(killed.glob("v*.json")))
    assert 1 <= done_before < 4  # killed mid-run
    assert main([*argv, "--out", str(killed)]) == 0
    statuses = sorted(r["status"] for r in read_manifest(killed / "manifest.parquet"))
    assert statuses.count("skipped") == done_before and statuses.count("ok") == 4 - done_before
    clean = tmp_path / "clean"
    assert main([*argv, "--out", str(clean)]) == 0
    for i in range(4):
        a = torch.load(killed / f"v{i}.pt", weights_only=True)
        torch.testing.assert_close(a, torch.load(clean / f"v{i}.pt", weights_only=True), atol=0, rtol=0)
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]

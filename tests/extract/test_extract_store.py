"""Reruns against the feature store (weights, sampling), bad arguments, stale temps, a full disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

import egovlp
from egovlp.cli import run
from extract.cli import main
from extract.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args) -> int:
    return main([*map(str, args), "--no-progress", "--workers", "0"])


def _dispatch(argv: list[str]) -> int:
    """`egovlp extract ...` through the dispatcher; argparse's own errors exit via SystemExit."""
    try:
        return run(argv)
    except SystemExit as done:
        return int(done.code)


def _statuses(out: Path) -> dict[str, str]:
    return {r["name"]: r["status"] for r in read_manifest(out / "manifest.parquet")}


@pytest.fixture
def two_videos(tmp_path, index_videos) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(index_videos / "vid30.mp4", folder / "a.mp4")
    shutil.copy(index_videos / "vid25.mp4", folder / "b.mp4")
    return folder


@pytest.fixture
def one_video(tmp_path, index_videos) -> Path:
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(index_videos / "vid25.mp4", folder / "b.mp4")
    return folder


def test_rerun_recomputes_for_other_weights_or_sampling(tmp_path, one_video, micro_model_dir):
    out = tmp_path / "out"
    base = ("--model", micro_model_dir, "--preset", "nlq", "--input", one_video, "--out", out)
    assert _run(*base) == 0
    first = json.loads((out / "b.json").read_text())
    assert len(first["weights_hash"]) == 16 and first["short_side"] is None and first["compat"] is False
    assert _run(*base) == 0 and set(_statuses(out).values()) == {"skipped"}  # same weights: skipped
    # same architecture, one weight changed: a different model, every output redone
    other = tmp_path / "other_model"
    model = egovlp.load_model(str(micro_model_dir))
    with torch.no_grad():
        model.vid_proj[0].bias.add_(0.5)
    model.save_pretrained(str(other))
    assert _run("--model", other, *base[2:]) == 0
    assert set(_statuses(out).values()) == {"ok"}
    second = json.loads((out / "b.json").read_text())
    assert second["config_hash"] == first["config_hash"] and second["weights_hash"] != first["weights_hash"]
    assert _run("--model", other, *base[2:]) == 0 and set(_statuses(out).values()) == {"skipped"}
    # other sampling: --compat and --short-side are different outputs too
    assert _run("--model", other, *base[2:], "--compat") == 0 and set(_statuses(out).values()) == {"ok"}
    assert _run("--model", other, *base[2:], "--short-side", "24") == 0
    assert set(_statuses(out).values()) == {"ok"}
    assert json.loads((out / "b.json").read_text())["short_side"] == 24


def test_stale_temps_of_a_killed_run_are_removed(tmp_path, two_videos, micro_model_dir):
    out = tmp_path / "out"
    out.mkdir()
    # what a SIGKILLed writer leaves: a temp named after a host and a pid that no longer exists
    stale = out / f".a.h5.{os.uname().nodename[:32]}.999999999.{uuid.uuid4().hex[:8]}.tmp"
    stale.write_bytes(b"\0" * 1000)
    assert _run("--model", micro_model_dir, "--preset", "nlq", "--input", two_videos, "--out", out) == 0
    assert not stale.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--workers", "-1"], "--workers"),
        (["--device", "bogus"], "--device"),
        (["--chunk-rows", "-3"], "--chunk-rows"),
        (["--engine", "spark"], "--engine"),
        (["--preset", "nope"], "--preset"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(tmp_path, two_videos, micro_model_dir, capsys, extra, needle):
    args = ["extract", "--model", str(micro_model_dir), "--preset", "nlq", "--input", str(two_videos)]
    assert _dispatch([*args, "--out", str(tmp_path / "o"), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_output_path_that_is_a_file_and_scalar_defaults(tmp_path, two_videos, micro_model_dir, capsys):
    args = ["extract", "--model", str(micro_model_dir), "--preset", "nlq", "--input", str(two_videos)]
    (tmp_path / "file").write_text("x")
    assert _dispatch([*args, "--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err
    for text, needle in (
        ("42\n", "expected a mapping"),
        ("batch_size: 0\n", "batch_size"),
        ("bogus: 1\n", "bogus"),
    ):
        (tmp_path / "d.yaml").write_text(text)
        assert _dispatch([*args, "--out", str(tmp_path / "o"), "--defaults", str(tmp_path / "d.yaml")]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "d.yaml" in err and len(err.splitlines()) == 1


@pytest.fixture
def small_fs(tmp_path):
    """A 3 MiB tmpfs, skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path, leave: int, name: str) -> Path:
    stat = os.statvfs(mount)
    filler = mount / name
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def _cli(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "egovlp", "extract", *map(str, args), "--no-progress", "--workers", "0"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def test_full_disk_fails_rows_cleanly_and_a_rerun_completes(
    small_fs, tmp_path, index_videos, micro_model_dir, capsys
):
    clip = {"clip_fps": 5.0, "video_start_sec": 0.0, "video_end_sec": 5.0, "annotations": []}
    clips = [{"clip_uid": f"c{i}", **clip} for i in range(4)]
    (tmp_path / "vq.json").write_text(json.dumps({"videos": [{"video_uid": "vid30", "clips": clips}]}))
    out = small_fs / "out"
    out.mkdir()
    _fill(small_fs, 80 * 1024, "filler1")  # room for about two outputs
    args = ("--model", micro_model_dir, "--preset", "vq2d", "--input", tmp_path / "vq.json")
    args += ("--videos", index_videos, "--out", out)
    done = _cli(*args)
    assert done.returncode == 1, done.stderr  # not a signal
    assert "Traceback" not in done.stderr and "no space left" in done.stderr
    rows = read_manifest(out / "manifest.parquet")
    assert {r["status"] for r in rows} == {"ok", "failed"}
    assert all("no space left" in r["error"] for r in rows if r["status"] == "failed")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    failed = sorted(r["name"] for r in rows if r["status"] == "failed")
    # text preset on the full disk: one line, exit 2
    nlq = tmp_path / "nlq.json"
    queries = [{"query": "where is the cup " * 40, "clip_start_sec": 0, "clip_end_sec": 1}] * 300
    annotations = [{"annotation_uid": "a", "language_queries": queries}]
    clip = {"clip_uid": "c", "video_start_sec": 0, "video_end_sec": 5, "annotations": annotations}
    nlq.write_text(json.dumps({"videos": [{"video_uid": "v", "clips": [clip]}]}))
    _fill(small_fs, 0, "filler2")
    argv = ["extract", "--model", str(micro_model_dir), "--preset", "text"]
    argv += ["--input", str(nlq), "--out", str(out)]
    assert _dispatch([*argv, "--text-tokens", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no space left" in err and str(out) in err
    for path in small_fs.glob("filler*"):
        path.unlink()
    assert _run(*args) == 0
    rerun = read_manifest(out / "manifest.parquet")
    assert sorted(r["name"] for r in rerun if r["status"] == "ok") == failed  # the rest was complete
    assert {r["status"] for r in rerun if r["name"] not in failed} == {"skipped"}

"""`--engine ray` on a local Ray (2 CPUs, loopback): the local engine's bytes, bad files, a killed actor."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import write_index_video

from extract.cli import main
from extract.manifest import read_manifest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory, index_videos) -> Path:
    root = tmp_path_factory.mktemp("ray_videos")
    for i, frames in enumerate((150, 90, 120, 60, 100, 75)):
        write_index_video(root / f"v{i}.mp4", frames, 30)
    shutil.copy(index_videos / "vid25.mp4", root / "v25.mp4")  # a source that is not 30 fps
    return root


def _extract(model_dir, videos, out, *extra) -> int:
    args = ["--model", model_dir, "--preset", "nlq", "--input", videos, "--out", out, "--no-progress", *extra]
    return main([str(a) for a in args])


def _same_bytes(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        for suffix in (".pt", ".json"):
            assert (a / f"{name}{suffix}").read_bytes() == (b / f"{name}{suffix}").read_bytes(), name + suffix


def _local(model_dir, videos, out) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the replica's thread count on this 2-CPU Ray (1 decode task + 1 model CPU)
    try:
        assert _extract(model_dir, videos, out, "--workers", "0") == 0
    finally:
        torch.set_num_threads(threads)


def test_ray_engine_writes_the_local_engines_bytes(local_ray, videos, micro_model_dir, tmp_path):
    _local(micro_model_dir, videos, tmp_path / "local")
    assert _extract(micro_model_dir, videos, tmp_path / "ray", "--engine", "ray", "--workers", "1") == 0
    names = sorted(p.stem for p in videos.iterdir())
    _same_bytes(tmp_path / "local", tmp_path / "ray", names)
    rows = read_manifest(tmp_path / "ray" / "manifest.parquet")
    assert [(r["name"], r["status"]) for r in rows] == [(n, "ok") for n in names]
    # resume: everything is complete with these weights and this sampling
    assert _extract(micro_model_dir, videos, tmp_path / "ray", "--engine", "ray", "--workers", "1") == 0
    assert {r["status"] for r in read_manifest(tmp_path / "ray" / "manifest.parquet")} == {"skipped"}


def test_ray_engine_bad_file_among_good_ones(local_ray, videos, micro_model_dir, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(videos / "v1.mp4", mixed / "good.mp4")
    (mixed / "corrupt.mp4").write_bytes(os.urandom(4000))
    (mixed / "empty.mp4").write_bytes(b"")
    out = tmp_path / "out"
    assert _extract(micro_model_dir, mixed, out, "--engine", "ray", "--workers", "1") == 1
    rows = {r["name"]: r for r in read_manifest(out / "manifest.parquet")}
    assert {n: r["status"] for n, r in rows.items()} == {"good": "ok", "corrupt": "failed", "empty": "failed"}
    assert "empty" in rows["empty"]["error"]
    assert (out / "good.pt").is_file() and not (out / "corrupt.json").exists()
    assert "2 of 3 inputs failed" in capsys.readouterr().err


def _replica_pids() -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "ModelReplica" in cmdline and "MapWorker" in cmdline:
            found.append(proc.info["pid"])
    return found


def test_sigkill_of_a_model_actor_is_retried(local_ray, videos, micro_model_dir, tmp_path):
    out = tmp_path / "killed"
    result: dict[str, int] = {}
    run = threading.Thread(
        target=lambda: result.update(
            code=_extract(
                micro_model_dir, videos, out, "--engine", "ray", "--workers", "1", "--batch-size", "1"
            )
        )
    )
    run.start()
    deadline = time.monotonic() + 60
    while not list(out.glob("v*.json")) and run.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = _replica_pids()
    assert run.is_alive() and len(pids) == 1, "the run ended before the actor could be killed"
    os.kill(pids[0], signal.SIGKILL)
    killed_at = len(list(out.glob("v*.json")))
    run.join(timeout=120)
    assert not run.is_alive() and result["code"] == 0
    assert killed_at < 7  # the kill came mid-run
    assert pids[0] not in _replica_pids()  # a new replica did the rest
    rows = read_manifest(out / "manifest.parquet")
    assert sorted(r["status"] for r in rows) == ["ok"] * 7
    # batch size 1 in the killed run: compare against the same batches
    clean = tmp_path / "clean"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _extract(micro_model_dir, videos, clean, "--workers", "0", "--batch-size", "1") == 0
    finally:
        torch.set_num_threads(threads)
    _same_bytes(clean, out, sorted(p.stem for p in videos.iterdir()))

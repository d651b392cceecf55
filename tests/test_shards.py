"""Shard writer (`egovlp shard`) and the training loader on a small hand-made EgoClip set."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from egovlp import io as egovlp_io
from egovlp.cli import run as cli_run
from egovlp.errors import InputError
from egovlp.formats.egoclip import EgoClipRow, write_egoclip
from pretrain import shard_write as W
from pretrain import shards as S
from pretrain.loader import expand_shards, make_train_loader, num_samples

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
NUM_VERBS, NUM_NOUNS = 5, 6


def make_video(path: Path, n: int, fps: int, first: int = 0) -> None:
    """64x48 mp4 whose frame i shows a flat colour encoding the id first + i."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(first, first + n):
            img = np.zeros((48, 64, 3), np.uint8)
            img[..., 0], img[..., 1], img[..., 2] = (i % 30) * 8, (i // 30) * 8, 128
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def jpeg_ids(jpegs: list[bytes]) -> list[int]:
    ids = []
    for data in jpegs:
        img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # [H, W, 3]
        r, g = (float(img[img.shape[0] // 2, img.shape[1] // 2, c]) for c in (0, 1))
        ids.append(int(round(r / 8) + 30 * round(g / 8)))
    return ids


# (video_uid, narration_time, clip_start, clip_end); clip_idx is the position
CLIPS = [
    ("vid_a", 2.0, 1.0, 3.0),  # 0  segment vid_a_0
    ("vid_a", 5.0, 4.0, 6.0),  # 1  segment vid_a_0
    ("vid_a", 9.0, 8.0, 10.0),  # 2  segment vid_a_0
    ("vid_a", 65.0, 64.0, 66.0),  # 3  alone in vid_a_1: nearest is clip 2
    ("vid_b", 590.0, 589.0, 591.0),  # 4  segment vid_b_9 (chunk 0)
    ("vid_b", 599.0, 598.2, 602.2),  # 5  segment vid_b_9, crosses the 600 s chunk boundary
    ("vid_b", 605.0, 604.0, 606.0),  # 6  alone in vid_b_10 (chunk 1): nearest is clip 5
    ("vid_bad", 1.0, 0.5, 1.5),  # 7  not a video
    ("vid_bad", 2.0, 1.5, 2.5),  # 8
    ("vid_zero", 1.0, 0.5, 1.5),  # 9  zero bytes
    ("vid_zero", 2.0, 1.5, 2.5),  # 10
]
GOOD = {0, 1, 2, 3, 4, 5, 6}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("egoclip")
    videos = root / "videos"
    make_video(videos / "vid_a.mp4", 700, fps=10)  # 70 s
    make_video(videos / "vid_b" / "0.mp4", 600, fps=1)  # 1 fps keeps a 600 s chunk small
    make_video(videos / "vid_b" / "1.mp4", 30, fps=1, first=600)
    (videos / "vid_bad.mp4").write_text("not a video at all\n" * 50)
    (videos / "vid_zero.mp4").touch()
    rows = [
        EgoClipRow(
            i, uid, 700.0, "narration_pass_1", i, t, s, e, f"#C C does thing {i}", [i % NUM_VERBS], [i % 6]
        )
        for i, (uid, t, s, e) in enumerate(CLIPS)
    ]
    write_egoclip(rows, root / "egoclip.csv")
    return root / "egoclip.csv", videos


ARGS = {"frames": 4, "size": 32, "shard_size": 3, "seed": 7}


@pytest.fixture(scope="module")
def shards_dir(dataset, tmp_path_factory) -> Path:
    csv, videos = dataset
    out = tmp_path_factory.mktemp("shards")
    summary = S.run_shards(csv, videos, out, workers=0, progress=False, **ARGS)
    assert summary["shards"] == 4 and summary["samples"] == len(GOOD) and summary["failed"] == 4
    return out


def read_shards(out: Path) -> dict[str, dict[str, bytes]]:
    """shard name -> {member name: bytes}."""
    result = {}
    for tar_path in sorted(out.glob("shard-*.tar")):
        with tarfile.open(tar_path) as tar:
            result[tar_path.name] = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    return result


def samples_by_clip(out: Path) -> dict[int, tuple[dict, dict[str, bytes]]]:
    samples = {}
    for members in read_shards(out).values():
        for name, data in members.items():
            if name.endswith(".json"):
                key = name[: -len(".json")]
                meta = json.loads(data)
                files = {n[len(key) + 1 :]: d for n, d in members.items() if n.startswith(key + ".")}
                samples[meta["clip_idx"]] = (meta, files)
    return samples


def test_status_sizes_and_failures(shards_dir):
    status = {}
    for path in sorted(shards_dir.glob("shard-*.status.parquet")):
        for rec in pq.read_table(path).to_pylist():
            status[rec["clip_idx"]] = rec
    assert set(status) == set(range(len(CLIPS)))  # every row accounted for, none silently lost
    assert {i for i, r in status.items() if r["status"] == "ok"} == GOOD
    for i in (7, 8):
        assert "vid_bad.mp4" in status[i]["error"] and status[i]["status"] == "failed"
    for i in (9, 10):
        assert "vid_zero.mp4" in status[i]["error"] and "0 bytes" in status[i]["error"]
    sizes = json.loads((shards_dir / "sizes.json").read_text())
    assert sorted(sizes) == [S.shard_name(i) for i in range(4)] and sum(sizes.values()) == len(GOOD)
    assert num_samples(expand_shards(shards_dir)) == len(GOOD)
    assert not list(shards_dir.glob(".*tmp"))


def test_samples_frames_and_negatives(shards_dir):
    samples = samples_by_clip(shards_dir)
    assert set(samples) == GOOD
    for idx, (meta, files) in samples.items():
        assert sorted(files) == [
            "json",
            *(f"neg{k}.jpg" for k in range(4)),
            *(f"pos{k}.jpg" for k in range(4)),
        ]
        neg = meta["negative"]
        assert neg["video_uid"] == meta["video_uid"] and neg["clip_idx"] != idx
        if neg["source"] == "segment":
            assert neg["segment"] == meta["segment"]
        assert meta["text"] == f"#C C does thing {idx}" and meta["tag_verb"] == [idx % NUM_VERBS]
        with Image.open(io.BytesIO(files["pos0.jpg"])) as img:
            assert (img.format, img.size) == ("JPEG", (43, 32))  # short side --size, aspect kept
    assert (samples[3][0]["negative"]["source"], samples[3][0]["negative"]["clip_idx"]) == ("nearest", 2)
    assert (samples[6][0]["negative"]["source"], samples[6][0]["negative"]["clip_idx"]) == ("nearest", 5)
    assert samples[0][0]["negative"]["clip_idx"] in (1, 2)
    # vid_a at 10 fps, clip 1.0-3.0 s: middles 1.25, 1.75, 2.25, 2.75 s
    assert jpeg_ids([samples[0][1][f"pos{k}.jpg"] for k in range(4)]) == [12, 18, 22, 28]
    # the chunk-crossing clip: 598.7, 599.7 (clamped to chunk 0's last frame), 600.7, 601.7 s
    assert samples[5][0]["times"] == pytest.approx([598.7, 599.7, 600.7, 601.7])
    assert jpeg_ids([samples[5][1][f"pos{k}.jpg"] for k in range(4)]) == [599, 599, 601, 602]
    # clip 6's negative is the crossing clip, read again with the same frames
    assert jpeg_ids([samples[6][1][f"neg{k}.jpg"] for k in range(4)]) == [599, 599, 601, 602]


def test_resume_after_interruption_matches_uninterrupted(dataset, shards_dir, tmp_path, monkeypatch):
    csv, videos = dataset
    out = tmp_path / "resumed"
    real_read = W._read_clip
    calls = {"n": 0}

    def dying_read(task, row):
        calls["n"] += 1
        if task.index == 2 and calls["n"] > 1:
            raise KeyboardInterrupt  # the run is killed half-way through shard 2
        return real_read(task, row)

    monkeypatch.setattr(W, "_read_clip", dying_read)
    with pytest.raises(KeyboardInterrupt):
        S.run_shards(csv, videos, out, workers=0, progress=False, **ARGS)
    monkeypatch.setattr(W, "_read_clip", real_read)
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    assert S.shard_name(2) not in done_before and len(done_before) >= 1
    # as a hard kill leaves it: named after this host and a writer pid that is gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".shard-000002.tar.{egovlp_io._HOST}.{dead.pid}.deadbeef.tmp").write_bytes(b"half a shard")

    summary = S.run_shards(csv, videos, out, workers=0, progress=False, **ARGS)
    assert summary["shards_written"] == 4 - len(done_before)
    assert {n: (out / n).stat().st_mtime_ns for n in done_before} == done_before  # not rewritten
    assert not list(out.glob(".*.tmp"))
    assert read_shards(out) == read_shards(shards_dir)  # same keys, same frame bytes
    assert (out / "sizes.json").read_text() == (shards_dir / "sizes.json").read_text()


def test_parallel_workers_write_the_same_shards(dataset, shards_dir, tmp_path):
    csv, videos = dataset
    out = tmp_path / "parallel"
    summary = S.run_shards(csv, videos, out, workers=2, progress=False, **ARGS)
    assert summary["samples"] == len(GOOD)
    assert read_shards(out) == read_shards(shards_dir)


def test_other_arguments_refuse_to_resume(dataset, shards_dir):
    csv, videos = dataset
    with pytest.raises(InputError, match="frames: 4 -> 8"):
        S.run_shards(csv, videos, shards_dir, workers=0, progress=False, **{**ARGS, "frames": 8})


def test_cli(dataset, tmp_path, capsys):
    csv, videos = dataset
    out = tmp_path / "cli"
    argv = ["shard", "--csv", str(csv), "--videos", str(videos), "--out", str(out), "--size", "32"]
    assert cli_run([*argv, "--shard-size", "20", "--workers", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == len(GOOD) and summary["shards"] == 1
    assert (
        cli_run(["shard", "--csv", str(tmp_path / "nope.csv"), "--videos", str(videos), "--out", str(out)])
        == 2
    )
    assert "nope.csv" in capsys.readouterr().err


def test_pick_negatives_lone_video():
    rows = [EgoClipRow(0, "solo", 10.0, "n", 0, 1.0, 0.5, 1.5, "t", [0], [0])]
    assert S.pick_negatives(rows, 0) == [(None, "none")]


def _expected_negatives(out: Path) -> dict[int, int]:
    expected = {}
    for path in out.glob("shard-*.status.parquet"):
        for rec in pq.read_table(path).to_pylist():
            if rec["status"] == "ok":
                expected[rec["clip_idx"]] = rec["negative_clip_idx"]
    return expected


def _check_batch(batch: dict, b: int, expected: dict[int, int], samples: dict) -> None:
    assert batch["video"].shape == (2 * b, 4, 3, 24, 24) and batch["video"].dtype == torch.float32
    assert batch["verb"].shape == (2 * b, NUM_VERBS) and batch["noun"].shape == (2 * b, NUM_NOUNS)
    assert len(batch["text"]) == len(batch["segment"]) == 2 * b
    ids = batch["clip_idx"].tolist()
    for i in range(b):
        clip, neg = ids[i], ids[b + i]
        assert neg == expected[clip]  # each clip's own negative, B rows below it
        assert batch["video_uid"][i] == batch["video_uid"][b + i]
        if samples[clip][0]["negative"]["source"] == "segment":
            assert batch["segment"][i] == batch["segment"][b + i]
        assert batch["text"][i] == f"#C C does thing {clip}"
        assert batch["verb"][i].tolist() == [float(k == clip % NUM_VERBS) for k in range(NUM_VERBS)]
        assert batch["verb"][b + i].sum() == 1 and batch["noun"][b + i][neg % 6] == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_carry_their_negatives(shards_dir, workers):
    expected, samples = _expected_negatives(shards_dir), samples_by_clip(shards_dir)
    loader = make_train_loader(
        str(shards_dir), 2, workers, epoch_size=8, seed=0, num_verbs=NUM_VERBS, num_nouns=NUM_NOUNS, size=24
    )
    assert loader.num_batches == 4
    for _epoch in range(2):  # resampled: any number of epochs
        batches = list(loader)
        assert len(batches) == 4
        for batch in batches:
            _check_batch(batch, 2, expected, samples)


def test_loader_single_pass_and_shard_count_assertion(shards_dir):
    expected, samples = _expected_negatives(shards_dir), samples_by_clip(shards_dir)
    loader = make_train_loader(
        str(shards_dir / "shard-{000000..000003}.tar"),
        1,
        0,
        len(GOOD),
        0,
        NUM_VERBS,
        NUM_NOUNS,
        24,
        resampled=False,
    )
    seen = []
    for batch in loader:
        _check_batch(batch, 1, expected, samples)
        seen.append(batch["clip_idx"][0].item())
    assert sorted(seen) == sorted(GOOD)  # one pass reads every sample once
    with pytest.raises(AssertionError, match=r"4 shard\(s\) for 3 worker\(s\) x 2 process\(es\)"):
        make_train_loader(
            str(shards_dir), 1, 3, 8, 0, NUM_VERBS, NUM_NOUNS, 24, resampled=False, world_size=2
        )
    with pytest.raises(InputError, match="no shards"):
        make_train_loader(str(shards_dir / "none-*.tar"), 1, 0, 8, 0, NUM_VERBS, NUM_NOUNS)


def test_corrupt_finished_shard_is_written_again(dataset, shards_dir, tmp_path):
    csv, videos = dataset
    out = tmp_path / "corrupt"
    S.run_shards(csv, videos, out, workers=0, progress=False, **ARGS)
    good = (out / S.shard_name(1)).read_bytes()
    (out / S.shard_name(1)).write_bytes(good[: len(good) // 3])  # truncated mid-member
    summary = S.run_shards(csv, videos, out, workers=0, progress=False, **ARGS)
    assert summary["shards_written"] == 1 and summary["samples"] == len(GOOD)
    assert (out / S.shard_name(1)).read_bytes() == good


def test_every_video_missing_is_an_error(dataset, tmp_path, capsys):
    csv, _ = dataset
    empty = tmp_path / "no-videos"
    empty.mkdir()
    argv = [
        "shard",
        "--csv",
        str(csv),
        "--videos",
        str(empty),
        "--out",
        str(tmp_path / "o"),
        "--workers",
        "0",
    ]
    assert cli_run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "none of the csv's" in err and str(empty) in err and "\n" not in err
    # videos there but none readable: the run ends in an error naming the first failure, not exit 0
    broken = tmp_path / "broken"
    broken.mkdir()
    for uid in {uid for uid, *_ in CLIPS}:
        (broken / f"{uid}.mp4").write_bytes(b"not a video")
    argv = [
        "shard",
        "--csv",
        str(csv),
        "--videos",
        str(broken),
        "--out",
        str(tmp_path / "o2"),
        "--workers",
        "0",
    ]
    assert cli_run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("egovlp shard: error: ") and "none of its 11 clips could be read" in err


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state, ppid = _proc_state(int(entry.name))
            if ppid == pid and state not in ("Z", "X", None):
                found.append(int(entry.name))
    return found


def _proc_state(pid: int) -> tuple[str | None, int | None]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None, None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "(comm)": state, ppid, ...
    return fields[0], int(fields[1])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigkilled_shard_run_leaves_no_worker_behind(dataset, tmp_path):
    """`shard --workers 1` killed with SIGKILL: its pool worker dies too and writes nothing more."""
    _, videos = dataset
    # many one-clip shards of the good video: minutes of work, so the worker is busy when killed
    rows = [
        EgoClipRow(
            i, "vid_a", 700.0, "n", i, 2.0 + (i % 60), 1.0 + (i % 60), 3.0 + (i % 60), "#C x", [0], [0]
        )
        for i in range(2000)
    ]
    write_egoclip(rows, tmp_path / "many.csv")
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "egovlp",
            "shard",
            "--csv",
            str(tmp_path / "many.csv"),
            "--videos",
            str(videos),
        ]
        + ["--out", str(out), "--workers", "1", "--shard-size", "1", "--size", "32"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not (list(out.glob("shard-*.tar")) and _children(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline, "shard run never got going"
            time.sleep(0.05)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_proc_state(w)[0] not in ("Z", "X", None) for w in workers):
            assert time.monotonic() < deadline, f"pool worker(s) {workers} outlived the killed run"
            time.sleep(0.05)
        written = len(list(out.glob("shard-*.tar")))
        time.sleep(1.0)
        assert len(list(out.glob("shard-*.tar"))) == written  # nothing writes after the kill
        assert written < len(rows)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:  # a failing run must not leave its orphan behind either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

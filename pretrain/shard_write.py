"""Writing one shard in a worker process: a clip and its negative -> JPEG frames in a webdataset tar.

The status parquet lands before the tar, both through `egovlp.io`, so a tar on disk always has its
status beside it and a killed worker leaves only temp files (removed by the next run).
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from egovlp.errors import InputError
from egovlp.formats.egoclip import EgoClipRow, segment_id
from egovlp.io import atomic_write
from egovlp.procs import die_with_parent
from egovlp.video import clip_sample_times, read_ego4d_frames

logger = logging.getLogger(__name__)

JPEG_QUALITY = 90


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def status_name(index: int) -> str:
    return f"shard-{index:06d}.status.parquet"


def sample_key(row: EgoClipRow) -> str:
    return f"{row.clip_idx:09d}"


@dataclass
class ShardTask:
    index: int
    out_dir: str
    video_root: str
    frames: int
    size: int
    # (clip row, negative row or None, negative source)
    items: list[tuple[EgoClipRow, EgoClipRow | None, str]] = field(default_factory=list)


@dataclass
class ShardResult:
    index: int
    ok: int
    failed: int


# --------------------------------------------------------------------------------------------
# writing one shard (worker process)


def _encode_jpegs(frames) -> list[bytes]:
    """uint8 [F, H, W, 3] numpy -> F JPEG byte strings (Pillow's libjpeg: fast and deterministic)."""
    from PIL import Image

    out = []
    for img in frames:
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        out.append(buffer.getvalue())
    return out


def _clip_record(row: EgoClipRow, times: list[float]) -> dict:
    return {
        "clip_idx": row.clip_idx,
        "video_uid": row.video_uid,
        "text": row.clip_text,
        "tag_verb": list(row.tag_verb),
        "tag_noun": list(row.tag_noun),
        "narration_time": row.narration_time,
        "clip_start": row.clip_start,
        "clip_end": row.clip_end,
        "segment": segment_id(row.video_uid, row.narration_time),
        "times": times,
    }


def _read_clip(task: ShardTask, row: EgoClipRow) -> tuple[dict, list[bytes]]:
    times = clip_sample_times(row.clip_start, row.clip_end, task.frames, "middle")
    frames = read_ego4d_frames(task.video_root, row.video_uid, times, short_side=task.size)
    return _clip_record(row, times), _encode_jpegs(frames)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444  # fixed metadata: reruns give equal bytes
    tar.addfile(info, io.BytesIO(data))


def write_shard(task: ShardTask) -> ShardResult:
    """Decode, encode and write one shard plus its status parquet; both appear only when complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(task.out_dir)
    status: dict[str, list] = defaultdict(list)
    ok = 0
    with atomic_write(out / shard_name(task.index), "wb") as handle:
        # a killed run leaves atomic_write's temp file; remove_stale_temps clears it on the next run
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for row, neg, source in task.items:
                error = ""
                try:
                    if neg is None:
                        raise InputError(f"video {row.video_uid} has no other clip to serve as a negative")
                    meta, pos_jpegs = _read_clip(task, row)
                    neg_meta, neg_jpegs = _read_clip(task, neg)
                except InputError as err:  # VideoReadError included
                    error = str(err)
                    logger.info("clip %s skipped: %s", row.clip_idx, error)
                else:
                    key = sample_key(row)
                    meta["negative"] = {**neg_meta, "source": source}
                    _add(tar, f"{key}.json", json.dumps(meta).encode())
                    for k, data in enumerate(pos_jpegs):
                        _add(tar, f"{key}.pos{k}.jpg", data)
                    for k, data in enumerate(neg_jpegs):
                        _add(tar, f"{key}.neg{k}.jpg", data)
                    ok += 1
                status["clip_idx"].append(row.clip_idx)
                status["status"].append("failed" if error else "ok")
                status["error"].append(error)
                status["negative_clip_idx"].append(neg.clip_idx if neg is not None else None)
                status["negative_source"].append(source)
        table = pa.table(
            {
                "clip_idx": pa.array(status["clip_idx"], pa.int64()),
                "status": pa.array(status["status"], pa.string()),
                "error": pa.array(status["error"], pa.string()),
                "negative_clip_idx": pa.array(status["negative_clip_idx"], pa.int64()),
                "negative_source": pa.array(status["negative_source"], pa.string()),
            }
        )
        # the parquet lands before the tar: a tar on disk always has its status next to it
        with atomic_write(out / status_name(task.index), "wb") as pq_handle:
            pq.write_table(table, pq_handle)
    return ShardResult(task.index, ok, len(task.items) - ok)


def worker_init(parent_pid: int) -> None:
    die_with_parent(parent_pid)
    # one thread per worker process: the parallelism is across processes
    import torch

    torch.set_num_threads(1)

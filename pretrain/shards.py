"""`egovlp shard`: EgoClip csv + Ego4D-style videos -> webdataset tar shards for pretraining.

Each sample holds one clip and one scene-aware negative (docs/design.md B.4: another clip of the same
video in the same 60 s segment; when the segment has no other clip, the nearest clip in time of the
same video, recorded as such), so the loader needs no random access:

    {key}.json       clip_idx, video_uid, text, tag_verb, tag_noun, times, segment, ... and "negative"
    {key}.pos{k}.jpg the clip's frames (interval middles, short side --size), k = 0..F-1
    {key}.neg{k}.jpg the negative's frames

Rows are shuffled (seeded) before they are cut into shards of --shard-size. A clip whose video is
missing or corrupt is skipped and recorded in the shard's status parquet (clip_idx, status, error).
Every shard is written under a temp name and renamed when complete (status parquet first, tar last),
so a killed run restarted with the same arguments redoes only the incomplete shards. The arguments
are kept in `shard_config.json`; `sizes.json` maps each shard to its sample count.
"""

from __future__ import annotations

import bisect
import json
import logging
import multiprocessing
import os
import random
import sys
import tarfile
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from egovlp.cli_args import OneLineParser
from egovlp.errors import InputError
from egovlp.formats.egoclip import EgoClipRow, read_egoclip, segment_id
from egovlp.io import remove_stale_temps, write_json_atomic
from egovlp.validate import input_dir, input_file, non_negative_int, output_dir, positive_int
from egovlp.video import resolve_ego4d_video
from pretrain.shard_write import ShardTask, shard_name, status_name, worker_init, write_shard

logger = logging.getLogger(__name__)

CONFIG_NAME = "shard_config.json"
SIZES_NAME = "sizes.json"


# --------------------------------------------------------------------------------------------
# planning: negatives and shard contents (main process; deterministic from the csv and the seed)


def pick_negatives(rows: list[EgoClipRow], seed: int) -> list[tuple[int | None, str]]:
    """For each row: (index of its negative row or None, "segment" | "nearest" | "none").

    "segment": a random other clip of the same video and 60 s segment (B.4);
    "nearest": the segment has no other clip, so the clip of the same video closest in time.
    """
    rng = random.Random(seed)
    by_segment: dict[str, list[int]] = defaultdict(list)
    by_video: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_segment[segment_id(row.video_uid, row.narration_time)].append(i)
        by_video[row.video_uid].append((row.narration_time, i))
    for items in by_video.values():
        items.sort()
    out: list[tuple[int | None, str]] = []
    for i, row in enumerate(rows):
        same = by_segment[segment_id(row.video_uid, row.narration_time)]
        if len(same) > 1:
            j = same[rng.randrange(len(same) - 1)]
            out.append((same[-1] if j == i else j, "segment"))  # skip self: the last one stands in
            continue
        items = by_video[row.video_uid]
        pos = bisect.bisect_left(items, (row.narration_time, i))
        around = [items[k] for k in (pos - 1, pos + 1) if 0 <= k < len(items)]
        if not around:
            out.append((None, "none"))
            continue
        _, j = min(around, key=lambda item: (abs(item[0] - row.narration_time), item[0]))
        out.append((j, "nearest"))
    return out


def plan_shards(
    rows: list[EgoClipRow], shard_size: int, seed: int
) -> list[list[tuple[int, int | None, str]]]:
    """Rows shuffled with `seed`, cut into shards: per shard [(row, negative row, source)]."""
    negatives = pick_negatives(rows, seed)
    order = list(range(len(rows)))
    random.Random(seed + 1).shuffle(order)
    items = [(i, *negatives[i]) for i in order]
    return [items[k : k + shard_size] for k in range(0, len(items), shard_size)]


# --------------------------------------------------------------------------------------------
# the run


def shard_complete(out: Path, index: int) -> bool:
    return (out / shard_name(index)).is_file() and (out / status_name(index)).is_file()


def count_ok(out: Path, index: int) -> tuple[int, int]:
    """(ok, failed) clips of a finished shard, from its status parquet (InputError if unreadable)."""
    import pyarrow.parquet as pq

    path = out / status_name(index)
    try:
        column = pq.read_table(path, columns=["status"]).column("status").to_pylist()
    except Exception as err:  # pyarrow raises its own types for truncated or foreign files
        raise InputError(f"{path}: not a readable shard status file ({err})") from None
    ok = sum(1 for s in column if s == "ok")
    return ok, len(column) - ok


def shard_intact(out: Path, index: int) -> bool:
    """A finished shard whose tar lists one .json per ok clip of its status (headers only: cheap)."""
    try:
        ok, _ = count_ok(out, index)
        with tarfile.open(out / shard_name(index), mode="r:") as tar:
            samples = sum(1 for m in tar if m.name.endswith(".json"))
    except (InputError, tarfile.TarError, OSError, EOFError):
        return False
    return samples == ok


def _check_videos(rows: list[EgoClipRow], videos: Path) -> None:
    """InputError when not one video of the csv is in the video folder (a wrong --videos)."""
    uids = sorted({row.video_uid for row in rows})
    for uid in uids:
        try:
            resolve_ego4d_video(videos, uid)
            return
        except InputError:
            continue
    raise InputError(
        f"--videos {videos}: none of the csv's {len(uids)} videos is there "
        f"(looked for {uids[0]}.mp4 or {uids[0]}/0.mp4, ...)"
    )


def _check_config(out: Path, config: dict) -> None:
    path = out / CONFIG_NAME
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"{path}: unreadable ({err}); remove it or use another --out") from err
        diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in config.items() if old.get(k) != v]
        if diff:
            raise InputError(
                f"{out}: holds shards written with other arguments ({'; '.join(diff)}); "
                "use the same arguments to resume, or another --out"
            )
    else:
        write_json_atomic(config, path, indent=1)


def run_shards(
    csv: str | os.PathLike,
    videos: str | os.PathLike,
    out: str | os.PathLike,
    frames: int = 4,
    size: int = 224,
    shard_size: int = 1000,
    workers: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Write (or finish) the shards; returns a summary dict. workers=0 writes in this process."""
    for name, value, least in (("--frames", frames, 1), ("--size", size, 1), ("--shard-size", shard_size, 1)):
        if value < least:
            raise InputError(f"{name} {value}: must be a positive integer")
    if workers < 0:
        raise InputError(f"--workers {workers}: must be >= 0")
    csv, videos = input_file(csv, "--csv"), input_dir(videos, "--videos")
    out = output_dir(out, "--out")
    try:
        rows = read_egoclip(csv)
    except UnicodeDecodeError as err:  # the reader owns the layout; bytes that are not text end here
        raise InputError(f"--csv {csv}: not a UTF-8 text csv (byte {err.start})") from None
    if not rows:
        raise InputError(f"{csv}: no rows")
    seen: set[int] = set()
    for row in rows:
        if row.clip_idx in seen:
            raise InputError(f"{csv}: clip_idx {row.clip_idx} appears twice (it names the sample)")
        seen.add(row.clip_idx)
    _check_videos(rows, videos)
    config = {
        "csv": str(csv.resolve()),
        "csv_bytes": csv.stat().st_size,
        "num_rows": len(rows),
        "videos": str(videos.resolve()),
        "frames": frames,
        "size": size,
        "shard_size": shard_size,
        "seed": seed,
    }
    _check_config(out, config)
    remove_stale_temps(out)  # temp files of a killed run (its pid is gone)

    plan = plan_shards(rows, shard_size, seed)
    todo, counts = [], {}
    for i in range(len(plan)):
        if shard_complete(out, i):
            if shard_intact(out, i):
                counts[i] = count_ok(out, i)
                continue
            logger.warning("%s: corrupt or truncated; writing it again", out / shard_name(i))
        todo.append(i)
    tasks = [
        ShardTask(
            i,
            str(out),
            str(videos),
            frames,
            size,
            [(rows[r], rows[n] if n is not None else None, src) for r, n, src in plan[i]],
        )
        for i in todo
    ]
    if counts:
        logger.info("resuming: %d of %d shards already complete", len(counts), len(plan))
    from tqdm import tqdm

    start = time.perf_counter()
    todo_clips = sum(len(t.items) for t in tasks)
    bar = tqdm(total=todo_clips, unit="clip", desc="shard", file=sys.stderr, disable=not progress)
    try:
        if workers == 0:
            for task in tasks:
                result = write_shard(task)
                counts[result.index] = (result.ok, result.failed)
                bar.update(len(task.items))
        else:
            _run_pool(tasks, workers, counts, bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    sizes = {shard_name(i): counts[i][0] for i in range(len(plan))}
    write_json_atomic(sizes, out / SIZES_NAME, indent=1)
    ok = sum(c[0] for c in counts.values())
    failed = sum(c[1] for c in counts.values())
    written_ok = sum(counts[t.index][0] for t in tasks)
    if ok == 0:
        first = _first_error(out, len(plan))
        raise InputError(f"{csv}: none of its {len(rows)} clips could be read ({first})")
    return {
        "out": str(out),
        "shards": len(plan),
        "shards_written": len(tasks),
        "samples": ok,
        "failed": failed,
        "seconds": round(seconds, 3),
        "clips_per_s": round(written_ok / seconds, 2) if tasks and seconds > 0 else None,
    }


def _first_error(out: Path, num_shards: int) -> str:
    import pyarrow.parquet as pq

    for i in range(num_shards):
        errors = pq.read_table(out / status_name(i), columns=["error"]).column("error").to_pylist()
        for error in errors:
            if error:
                return f"first error: {error}"
    return "no clips"


def _run_pool(tasks: list[ShardTask], workers: int, counts: dict, bar) -> None:
    # fork where there is one: workers inherit the imported modules (importing egovlp pulls in torch
    # and takes seconds per spawned worker). Like DataLoader workers, each sets torch to one thread,
    # so no OpenMP pool inherited from the parent is ever entered.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    sizes = {t.index: len(t.items) for t in tasks}
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=worker_init, initargs=(os.getpid(),)
    ) as pool:
        pending = {pool.submit(write_shard, task) for task in tasks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    counts[result.index] = (result.ok, result.failed)
                    bar.update(sizes[result.index])
        except BaseException:
            # interrupted or a worker failed: drop queued shards; finished ones stay for a resume
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="egovlp shard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", required=True, help="EgoClip csv (tab separated)")
    parser.add_argument("--videos", required=True, help="video root: {uid}.mp4 or {uid}/{k}.mp4 chunks")
    parser.add_argument("--out", required=True, help="output folder for the shards")
    parser.add_argument("--frames", type=positive_int, default=4, help="frames per clip (interval middles)")
    parser.add_argument("--size", type=positive_int, default=224, help="short side of the stored JPEG frames")
    parser.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard")
    parser.add_argument(
        "--workers", type=non_negative_int, default=min(4, os.cpu_count() or 1), help="0 = in process"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="row shuffle and negative choice")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    summary = run_shards(
        args.csv, args.videos, args.out, args.frames, args.size, args.shard_size, args.workers, args.seed
    )
    print(json.dumps(summary))
    return 0

"""Pretraining data path throughput, next to the decode-only rate of the same videos in the same run.

    python benchmarks/bench_data.py [--data SYNTH_DIR] [--videos 8] [--workers 2] [--loader-workers 2]
                                    [--batch 8] [--frames 4] [--size 224] [--batches 20]

1. decode-only: one process reads each EgoClip row's clip (F interval-middle frames, short side
   --size) with `read_ego4d_frames`; clips/s. This is the reference rate.
2. shard writing: `egovlp shard` with --workers processes; samples/s and clips decoded/s (each
   sample decodes its clip and its negative).
3. loader: `make_train_loader` with --loader-workers; clips/s delivered as training tensors
   (2B clips per batch: B clips + B negatives, JPEG decode + train transform), after one warm-up
   batch that pays the worker start.

Without --data a synthetic set is written first (`egovlp synth`, --videos videos). Prints one
JSON object with the rates and the ratios to the decode-only rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from egovlp.formats.egoclip import read_egoclip  # noqa: E402
from egovlp.formats.taxonomy import read_taxonomy  # noqa: E402
from egovlp.video import available_backends, clip_sample_times, read_ego4d_frames  # noqa: E402
from pretrain.loader import make_train_loader  # noqa: E402
from pretrain.shards import run_shards  # noqa: E402


def decode_only(csv: Path, videos: Path, frames: int, size: int, limit: int | None) -> dict:
    rows = read_egoclip(csv)[:limit]
    # warm-up outside the timing: the first read imports torch/torchvision (for the resize)
    read_ego4d_frames(videos, rows[0].video_uid, [rows[0].clip_start], short_side=size)
    start = time.perf_counter()
    for row in rows:
        times = clip_sample_times(row.clip_start, row.clip_end, frames, "middle")
        read_ego4d_frames(videos, row.video_uid, times, short_side=size)
    seconds = time.perf_counter() - start
    return {"clips": len(rows), "seconds": round(seconds, 3), "clips_per_s": round(len(rows) / seconds, 2)}


def shard_rate(csv: Path, videos: Path, out: Path, args) -> dict:
    summary = run_shards(
        csv, videos, out, args.frames, args.size, args.shard_size, args.workers, seed=0, progress=False
    )
    seconds = summary["seconds"]
    return {
        "samples": summary["samples"],
        "failed": summary["failed"],
        "seconds": seconds,
        "samples_per_s": round(summary["samples"] / seconds, 2),
        "clips_decoded_per_s": round(2 * summary["samples"] / seconds, 2),
    }


def loader_rate(shards: Path, data: Path, args) -> dict:
    num_verbs = len(read_taxonomy(data / "verb_taxonomy.json"))
    num_nouns = len(read_taxonomy(data / "noun_taxonomy.json"))
    epoch = (args.batches + 1) * args.batch
    loader = make_train_loader(
        str(shards), args.batch, args.loader_workers, epoch, 0, num_verbs, num_nouns, args.size
    )
    it = iter(loader)
    t0 = time.perf_counter()
    next(it)  # warm-up: worker start, first shards opened
    warmup = time.perf_counter() - t0
    start = time.perf_counter()
    n = 0
    for batch in it:
        n += batch["video"].shape[0]
    seconds = time.perf_counter() - start
    return {
        "batches": n // (2 * args.batch),
        "clips": n,
        "warmup_seconds": round(warmup, 3),
        "seconds": round(seconds, 3),
        "clips_per_s": round(n / seconds, 2),
        "video_shape": list(batch["video"].shape),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, help="an `egovlp synth` folder (egoclip.csv, videos/, taxonomies)"
    )
    parser.add_argument("--videos", type=int, default=8, help="videos to synthesize when --data is not given")
    parser.add_argument("--workers", type=int, default=2, help="shard writer processes")
    parser.add_argument("--loader-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--batch", type=int, default=8, help="B (a batch holds 2B clips)")
    parser.add_argument("--batches", type=int, default=20, help="timed loader batches")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=224, help="short side of the shard JPEGs")
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--limit", type=int, default=None, help="decode-only: first N rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    parser.add_argument("--backend", choices=["decord", "pyav"], help="force a decoder (default: auto)")
    args = parser.parse_args(argv)
    if args.backend:
        os.environ["EGOVLP_VIDEO_BACKEND"] = args.backend  # inherited by the shard workers

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        data = args.data
        synth_seconds = None
        if data is None:
            from egovlp.synth import synthesize

            data = Path(tmp) / "synth"
            t0 = time.perf_counter()
            synthesize(data, videos=args.videos, seed=0, workers=args.workers)
            synth_seconds = round(time.perf_counter() - t0, 1)
        csv, videos = data / "egoclip.csv", data / "videos"
        decode = decode_only(csv, videos, args.frames, args.size, args.limit)
        shards = shard_rate(csv, videos, Path(tmp) / "shards", args)
        loader = loader_rate(Path(tmp) / "shards", data, args)
    result = {
        "cpu_count": os.cpu_count(),
        "backend": args.backend or available_backends()[0],
        "synth_seconds": synth_seconds,
        "rows": decode["clips"],
        "frames": args.frames,
        "size": args.size,
        "decode_only": decode,
        "shard_write": {**shards, "workers": args.workers},
        "loader": {**loader, "workers": args.loader_workers, "batch": args.batch},
        "ratio_shard_clips_to_decode": round(shards["clips_decoded_per_s"] / decode["clips_per_s"], 2),
        "ratio_loader_to_decode": round(loader["clips_per_s"] / decode["clips_per_s"], 2),
    }
    print(
        f"decode-only {decode['clips_per_s']:.1f} clips/s (1 process) | "
        f"shard write {shards['samples_per_s']:.1f} samples/s = {shards['clips_decoded_per_s']:.1f} clips/s "
        f"({args.workers} workers) | loader {loader['clips_per_s']:.1f} clips/s ({args.loader_workers} workers) | "
        f"loader / decode-only = {result['ratio_loader_to_decode']:.2f}x",
        file=sys.stderr,
    )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

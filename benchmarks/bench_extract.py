"""Benchmark of `egovlp extract`: decode-only, model-only and end-to-end time for the same work.

    python benchmarks/bench_extract.py                       # tiny model, synthetic videos, CPU
    python benchmarks/bench_extract.py --config configs/model/egovlp-base.yaml --device cuda --videos DIR

Decode-only runs the reader (worker processes, sequential window reads, resize / crop) and drops
the frames; model-only runs the model over the same frames decoded beforehand (held in memory);
end-to-end runs the real pipeline (reader + model + writer) into a temp folder. The pipeline
overlaps the two stages, so end-to-end / max(decode, model) near 1 means the slower stage sets the
pace. Prints one JSON object on stdout.
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
# Decode workers and the model's OpenMP threads share the cores; spinning OpenMP threads (the default
# ACTIVE policy) starve the decoders. Must be set before torch starts OpenMP, hence here at import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import egovlp  # noqa: E402
from extract.inputs import resolve_inputs  # noqa: E402
from extract.pipeline import ExtractOptions, extract_videos, model_step  # noqa: E402
from extract.reader import DecodeStream, probe, worker_init  # noqa: E402


def _loader(jobs, size: int, workers: int, chunk_rows: int, short_side: int | None) -> DataLoader:
    stream = DecodeStream(jobs, size, short_side=short_side, chunk_rows=chunk_rows)
    return DataLoader(
        stream, batch_size=None, num_workers=workers, worker_init_fn=worker_init if workers else None,
        prefetch_factor=4 if workers else None,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/model/tiny.yaml", help="model YAML (random weights)")
    p.add_argument("--videos", default=None, help="folder of videos (default: synthesize 4 x 24 s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)))
    p.add_argument("--short-side", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads of the model process")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch_size = args.batch_size or (32 if device.type == "cuda" else 8)

    tmp = tempfile.TemporaryDirectory()
    videos = args.videos
    if videos is None:
        from egovlp.synth.cli import synthesize

        videos = os.path.join(tmp.name, "synth")
        synthesize(videos, videos=4, duration=24.0, short_side=256)
        videos = os.path.join(videos, "videos")
    model = egovlp.create_model(args.config, device=str(device))
    if device.type == "cuda":
        model.autocast_dtype = torch.bfloat16
    size = model.cfg.video.img_size
    chunk_rows = max(1, 64 // batch_size) * batch_size
    jobs = [probe(item, "nlq") for item in resolve_inputs(videos)]
    video_seconds = sum(j.duration for j in jobs)
    rows = sum(j.plan.num_rows for j in jobs)

    # decode-only (and keep the frames for model-only)
    t0 = time.perf_counter()
    chunks = [c.frames for c in _loader(jobs, size, args.workers, chunk_rows, args.short_side)]
    decode_s = time.perf_counter() - t0

    # model-only on the pre-decoded frames (one warm-up batch first)
    step = model_step(model, "nlq")
    step(chunks[0][:batch_size].to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for frames in chunks:
        for b0 in range(0, len(frames), batch_size):
            step(frames[b0 : b0 + batch_size].to(device, non_blocking=True))["features"].cpu()
    model_s = time.perf_counter() - t0
    del chunks

    # end-to-end: the real pipeline
    out = Path(tmp.name) / "out"
    opts = ExtractOptions(
        preset="nlq", out=out, batch_size=batch_size, workers=args.workers, short_side=args.short_side,
        chunk_rows=chunk_rows, model_name=Path(args.config).stem, progress=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    manifest = extract_videos(model, resolve_inputs(videos), opts)
    e2e_s = time.perf_counter() - t0
    assert all(r.status == "ok" for r in manifest), manifest

    result = {
        "config": args.config,
        "device": str(device),
        "videos": len(jobs),
        "video_seconds": round(video_seconds, 2),
        "rows": rows,
        "batch_size": batch_size,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "decode_s": round(decode_s, 3),
        "model_s": round(model_s, 3),
        "end_to_end_s": round(e2e_s, 3),
        "e2e_over_max": round(e2e_s / max(decode_s, model_s), 3),
        "x_realtime_decode": round(video_seconds / decode_s, 2),
        "x_realtime_model": round(video_seconds / model_s, 2),
        "x_realtime": round(video_seconds / e2e_s, 2),
        "rows_per_s": round(rows / e2e_s, 2),
    }
    print(json.dumps(result))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

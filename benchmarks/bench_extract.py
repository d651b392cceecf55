"""Benchmark of `egovlp extract`: decode-only, model-only and end-to-end time for the same work.

    python benchmarks/bench_extract.py                       # tiny model, 16 synthetic videos x 30 s, CPU
    python benchmarks/bench_extract.py --config configs/model/egovlp-base.yaml --device cuda --videos DIR
    python benchmarks/bench_extract.py --ray                 # also the Ray engine on the same work

Each stage is measured with the resources it has inside the pipeline, using the pipeline's own pieces:
decode-only runs the reader (`decode_loader`: worker processes, sequential window reads, resize / crop)
and keeps the frames; model-only runs the model over those frames held in memory, on the model's cores
(on a CPU-only machine `extract/cpus.py` gives each decode worker a core and the model the rest; on a
GPU the model has the device); end-to-end runs `extract_videos` (reader + model + writer) into a temp
folder. The three are measured in interleaved rounds and the medians are compared, because this
machine is shared and noisy: end-to-end / max(decode, model) near 1 means the slower stage sets the
pace. `--compare-unpinned` adds end-to-end rounds of the unsplit scheme (model threads on every core,
workers unpinned) so the absolute x realtime of both is seen side by side. `--ray` adds, in the same
rounds, the same extraction through `--engine ray` on a local Ray started once before the rounds
(`ray_over_local`: its median time over the local engine's; actor start-up and model loading count,
Ray's own start does not). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Decode workers and the model's OpenMP threads share the cores; spinning OpenMP threads (the default
# ACTIVE policy) starve the decoders. Must be set before torch starts OpenMP, hence here at import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import egovlp  # noqa: E402
from extract.cpus import default_workers, pinned_model  # noqa: E402
from extract.inputs import resolve_inputs  # noqa: E402
from extract.local import cpu_split, decode_loader  # noqa: E402
from extract.pipeline import ExtractOptions, ModelSpec, extract_videos, model_step  # noqa: E402
from extract.reader import probe  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/model/tiny.yaml", help="model YAML (random weights)")
    p.add_argument("--videos", default=None, help="folder of videos (default: synthesize 16 x 30 s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=None, help="default: as egovlp extract (8 CPU, 32 GPU)")
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--short-side", type=int, default=None)
    p.add_argument(
        "--chunk-rows", type=int, default=64, help="rows per decoded chunk (egovlp extract's default)"
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--no-pin-cpus", action="store_true", help="measure the unsplit scheme instead")
    p.add_argument("--compare-unpinned", action="store_true", help="also time end-to-end without the split")
    p.add_argument("--ray", action="store_true", help="also time the Ray engine on the same work")
    p.add_argument("--precision", default="auto", help="auto (bf16 on CUDA), fp32, bf16, fp16")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    batch_size = args.batch_size or (32 if device.type == "cuda" else 8)

    tmp = tempfile.TemporaryDirectory()
    videos = args.videos
    if videos is None:
        from egovlp.synth.cli import synthesize

        videos = os.path.join(tmp.name, "synth")
        synthesize(videos, videos=16, duration=30.0, short_side=256)
        videos = os.path.join(videos, "videos")
    model = egovlp.create_model(args.config, device=str(device))
    if device.type == "cuda":
        model.autocast_dtype = {"fp32": None, "fp16": torch.float16}.get(args.precision, torch.bfloat16)
    spec = None
    if args.ray:
        import ray

        model_dir = os.path.join(tmp.name, "model")
        model.save_pretrained(model_dir)  # the actors load this copy
        spec = ModelSpec(model_dir, None, "cuda" if device.type == "cuda" else "cpu", args.precision)
        ray.init(include_dashboard=False, log_to_driver=False)
    jobs = [probe(item, "nlq") for item in resolve_inputs(videos)]
    video_seconds = sum(j.duration for j in jobs)
    rows = sum(j.plan.num_rows for j in jobs)

    def options(out: Path, pin: bool, engine: str = "local") -> ExtractOptions:
        return ExtractOptions(
            preset="nlq", out=out, batch_size=batch_size, workers=args.workers, short_side=args.short_side,
            chunk_rows=args.chunk_rows, pin_cpus=pin, model_name=Path(args.config).stem, progress=False,
            engine=engine,
        )  # fmt: skip

    opts = options(Path(tmp.name) / "unused", not args.no_pin_cpus)
    split = cpu_split(model, opts)
    step = model_step(model, "nlq")
    times: dict[str, list[float]] = {
        "decode": [],
        "model": [],
        "e2e": [],
        "e2e_model": [],
        "e2e_unpinned": [],
        "e2e_ray": [],
    }
    for r in range(args.rounds):
        # decode-only: the pipeline's reader; the frames are kept for model-only
        t0 = time.perf_counter()
        chunks = [c.frames for c in decode_loader(model, jobs, opts, split)]
        times["decode"].append(time.perf_counter() - t0)

        # model-only on the pre-decoded frames, on the model's cores (one warm-up batch first)
        with pinned_model(split):
            model_threads = torch.get_num_threads()
            step(chunks[0][:batch_size].to(device))
            _sync(device)
            t0 = time.perf_counter()
            for frames in chunks:
                for b0 in range(0, len(frames), batch_size):
                    step(frames[b0 : b0 + batch_size].to(device, non_blocking=True))["features"].cpu()
            times["model"].append(time.perf_counter() - t0)
        del chunks

        # end-to-end: the real pipeline into a fresh folder
        run = options(Path(tmp.name) / f"out{r}", not args.no_pin_cpus)
        t0 = time.perf_counter()
        done = extract_videos(model, resolve_inputs(videos), run)
        times["e2e"].append(time.perf_counter() - t0)
        times["e2e_model"].append(done.model_seconds)
        assert all(row.status == "ok" for row in done.rows), done.rows
        if args.ray:
            run = options(Path(tmp.name) / f"ray{r}", False, engine="ray")
            t0 = time.perf_counter()
            done = extract_videos(model, resolve_inputs(videos), run, spec)
            times["e2e_ray"].append(time.perf_counter() - t0)
            assert all(row.status == "ok" for row in done.rows), done.rows
        if args.compare_unpinned:
            run = options(Path(tmp.name) / f"unpinned{r}", False)
            t0 = time.perf_counter()
            extract_videos(model, resolve_inputs(videos), run)
            times["e2e_unpinned"].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    per_round = [e / max(d, m) for d, m, e in zip(times["decode"], times["model"], times["e2e"], strict=True)]
    result = {
        "config": args.config,
        "device": str(device),
        "videos": len(jobs),
        "video_seconds": round(video_seconds, 2),
        "rows": rows,
        "batch_size": batch_size,
        "workers": args.workers,
        "cpu_split": None if split is None else {"model": list(split.model), "workers": list(split.workers)},
        "model_threads": model_threads,
        "rounds": args.rounds,
        "decode_s": round(med["decode"], 3),
        "model_s": round(med["model"], 3),
        "end_to_end_s": round(med["e2e"], 3),
        "end_to_end_model_s": round(med["e2e_model"], 3),
        "e2e_over_max": round(med["e2e"] / max(med["decode"], med["model"]), 3),
        "e2e_over_max_per_round": [round(x, 3) for x in per_round],
        "x_realtime_decode": round(video_seconds / med["decode"], 2),
        "x_realtime_model": round(video_seconds / med["model"], 2),
        "x_realtime": round(video_seconds / med["e2e"], 2),
        "rows_per_s": round(rows / med["e2e"], 2),
    }
    if "e2e_unpinned" in med:
        result |= {
            "end_to_end_unpinned_s": round(med["e2e_unpinned"], 3),
            "x_realtime_unpinned": round(video_seconds / med["e2e_unpinned"], 2),
            "unpinned_over_pinned": round(med["e2e_unpinned"] / med["e2e"], 3),
        }
    if "e2e_ray" in med:
        result |= {
            "end_to_end_ray_s": round(med["e2e_ray"], 3),
            "x_realtime_ray": round(video_seconds / med["e2e_ray"], 2),
            "ray_over_local": round(med["e2e_ray"] / med["e2e"], 3),
            "ray_over_local_per_round": [
                round(a / b, 3) for a, b in zip(times["e2e_ray"], times["e2e"], strict=True)
            ],
        }
        import ray

        ray.shutdown()
    print(json.dumps(result))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

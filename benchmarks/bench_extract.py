"""Benchmark of `egovlp extract`: decode-only, model-only and end-to-end time, per precision.

    python benchmarks/bench_extract.py                       # tiny model, 16 synthetic videos x 30 s, CPU
    python benchmarks/bench_extract.py --config egovlp-base --device cuda --videos DIR
    python benchmarks/bench_extract.py --precisions fp32     # one precision only
    python benchmarks/bench_extract.py --ray                 # also the Ray engine on the same work

One model (random weights) is saved once and loaded per precision through the extractor's own
`load_extract_model` (weights cast once, `EgoVLP.set_precision`), so fp32 and bf16 run the same
weights side by side in one process. Each stage is measured with the resources it has inside the
pipeline, using the pipeline's own pieces: decode-only runs the reader (`decode_loader`: worker
processes, sequential window reads, resize / crop) and keeps the frames; model-only runs the model
over those frames held in memory, on the model's cores (on a CPU-only machine `extract/cpus.py` gives
each decode worker a core and the model the rest; on a GPU the model has the device); end-to-end runs
`extract_videos` (reader + model + writer) into a temp folder. Decode-only, then model-only and
end-to-end of every precision, are measured in interleaved rounds and the medians compared, because
this machine is shared and noisy. Per precision the result names the stage that bounds the pipeline
(`bound`: the slower of decode-only and model-only); `e2e_over_max` near 1 means that slower stage
sets the pace. `bf16_over_fp32` holds the speed ratios (model-only and end to end) and the smallest
per-row cosine similarity of the bf16 features to the fp32 ones. `--compare-unpinned` adds end-to-end
rounds of the unsplit scheme (model threads on every core, workers unpinned); `--ray` adds the same
extraction through `--engine ray` on a local Ray started once before the rounds (`ray_over_local`;
actor start-up and model loading count, Ray's own start does not). Prints one JSON object.
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
from egovlp.precision import PRECISIONS, cpu_has_bf16_matmul, resolve_precision  # noqa: E402
from extract.cpus import default_workers, pinned_model  # noqa: E402
from extract.inputs import resolve_inputs  # noqa: E402
from extract.local import cpu_split, decode_loader  # noqa: E402
from extract.options import ExtractOptions  # noqa: E402
from extract.pipeline import extract_videos  # noqa: E402
from extract.reader import probe  # noqa: E402
from extract.stage import ModelSpec, load_extract_model, model_step  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _features(out: Path) -> torch.Tensor:
    """Every `.pt` of an output folder, by name, stacked: [rows, 256]."""
    files = sorted(out.glob("*.pt"))
    return torch.cat([torch.load(f, weights_only=True) for f in files])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny", help="model config name or YAML (random weights)")
    p.add_argument("--videos", default=None, help="folder of videos (default: synthesize N x 30 s)")
    p.add_argument(
        "--num-videos",
        type=int,
        default=16,
        help="narrated videos to synthesize without --videos (the synthetic world adds its FHO and "
        "grounding videos; `videos` in the result counts them all)",
    )
    p.add_argument("--duration", type=float, default=30.0, help="seconds per synthetic video")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "bf16"],
        choices=PRECISIONS,
        help="run each, side by side (default fp32 bf16)",
    )
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    batch_size = args.batch_size or (32 if device.type == "cuda" else 8)
    precisions = list(dict.fromkeys(resolve_precision(p, device).name for p in args.precisions))

    tmp = tempfile.TemporaryDirectory()
    videos = args.videos
    if videos is None:
        from egovlp.synth.cli import synthesize

        videos = os.path.join(tmp.name, "synth")
        synthesize(videos, videos=args.num_videos, duration=args.duration, short_side=256)
        videos = os.path.join(videos, "videos")
    model_dir = os.path.join(tmp.name, "model")
    egovlp.create_model(args.config).save_pretrained(model_dir)  # one set of weights for every run
    specs = {p: ModelSpec(model_dir, None, str(device), p) for p in precisions}
    models = {p: load_extract_model(spec) for p, spec in specs.items()}
    if args.ray:
        import ray

        ray.init(include_dashboard=False, log_to_driver=False)
    jobs = [probe(item, "nlq") for item in resolve_inputs(videos)]
    video_seconds = sum(j.duration for j in jobs)
    rows = sum(j.plan.num_rows for j in jobs)
    name = Path(args.config).stem

    def options(out: Path, pin: bool, engine: str = "local") -> ExtractOptions:
        return ExtractOptions(
            preset="nlq",
            out=out,
            batch_size=batch_size,
            workers=args.workers,
            short_side=args.short_side,
            chunk_rows=args.chunk_rows,
            pin_cpus=pin,
            model_name=name,
            progress=False,
            engine=engine,
        )

    first = models[precisions[0]]
    opts = options(Path(tmp.name) / "unused", not args.no_pin_cpus)
    split = cpu_split(first, opts)
    steps = {p: model_step(m, "nlq") for p, m in models.items()}
    decode: list[float] = []
    times: dict[str, dict[str, list[float]]] = {
        p: {"model": [], "e2e": [], "e2e_model": [], "e2e_decode": [], "e2e_unpinned": [], "e2e_ray": []}
        for p in precisions
    }
    model_threads = torch.get_num_threads()
    for r in range(args.rounds):
        # decode-only: the pipeline's reader; the frames are kept for model-only
        t0 = time.perf_counter()
        chunks = [c.frames for c in decode_loader(first, jobs, opts, split)]
        decode.append(time.perf_counter() - t0)

        for p in precisions:
            model, step, t = models[p], steps[p], times[p]
            # model-only on the pre-decoded frames, on the model's cores (one warm-up batch first)
            with pinned_model(split):
                model_threads = torch.get_num_threads()
                step(chunks[0][:batch_size].to(device))
                _sync(device)
                t0 = time.perf_counter()
                for frames in chunks:
                    for b0 in range(0, len(frames), batch_size):
                        step(frames[b0 : b0 + batch_size].to(device, non_blocking=True))["features"].cpu()
                _sync(device)
                t["model"].append(time.perf_counter() - t0)

            # end-to-end: the real pipeline into a fresh folder
            run = options(Path(tmp.name) / f"{p}-out{r}", not args.no_pin_cpus)
            t0 = time.perf_counter()
            done = extract_videos(model, resolve_inputs(videos), run, specs[p])
            t["e2e"].append(time.perf_counter() - t0)
            t["e2e_model"].append(done.model_seconds)
            t["e2e_decode"].append(done.decode_seconds)
            assert all(row.status == "ok" for row in done.rows), done.rows
            if args.ray:
                run = options(Path(tmp.name) / f"{p}-ray{r}", False, engine="ray")
                t0 = time.perf_counter()
                done = extract_videos(model, resolve_inputs(videos), run, specs[p])
                t["e2e_ray"].append(time.perf_counter() - t0)
                assert all(row.status == "ok" for row in done.rows), done.rows
            if args.compare_unpinned:
                run = options(Path(tmp.name) / f"{p}-unpinned{r}", False)
                t0 = time.perf_counter()
                extract_videos(model, resolve_inputs(videos), run, specs[p])
                t["e2e_unpinned"].append(time.perf_counter() - t0)
        del chunks

    decode_s = _median(decode)
    result: dict = {
        "config": args.config,
        "device": str(device),
        # bf16 on a CPU is fast only with a bf16 matrix engine (AMX / AVX512-BF16; egovlp/precision.py)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_matmul": cpu_has_bf16_matmul(),
        "videos": len(jobs),
        "video_seconds": round(video_seconds, 2),
        "rows": rows,
        "batch_size": batch_size,
        "workers": args.workers,
        "cpu_split": None if split is None else {"model": list(split.model), "workers": list(split.workers)},
        "model_threads": model_threads,
        "rounds": args.rounds,
        "decode_s": round(decode_s, 3),
        "x_realtime_decode": round(video_seconds / decode_s, 2),
        "precisions": {},
    }
    for p in precisions:
        med = {k: _median(v) for k, v in times[p].items() if v}
        slower = max(decode_s, med["model"])
        per_round = [
            e / max(d, m) for d, m, e in zip(decode, times[p]["model"], times[p]["e2e"], strict=True)
        ]
        entry = {
            "model_s": round(med["model"], 3),
            "end_to_end_s": round(med["e2e"], 3),
            # inside the end-to-end run: the model's seconds, and the decoders' summed over workers
            "end_to_end_model_s": round(med["e2e_model"], 3),
            "end_to_end_decode_worker_s": round(med["e2e_decode"], 3),
            "bound": "decode" if decode_s >= med["model"] else "model",
            "model_over_decode": round(med["model"] / decode_s, 3),
            "e2e_over_max": round(med["e2e"] / slower, 3),
            "e2e_over_max_per_round": [round(x, 3) for x in per_round],
            "x_realtime_model": round(video_seconds / med["model"], 2),
            "x_realtime": round(video_seconds / med["e2e"], 2),
            "rows_per_s": round(rows / med["e2e"], 2),
        }
        if "e2e_unpinned" in med:
            entry |= {
                "end_to_end_unpinned_s": round(med["e2e_unpinned"], 3),
                "unpinned_over_pinned": round(med["e2e_unpinned"] / med["e2e"], 3),
            }
        if "e2e_ray" in med:
            entry |= {
                "end_to_end_ray_s": round(med["e2e_ray"], 3),
                "x_realtime_ray": round(video_seconds / med["e2e_ray"], 2),
                "ray_over_local": round(med["e2e_ray"] / med["e2e"], 3),
            }
        result["precisions"][p] = entry
    if "fp32" in precisions and "bf16" in precisions:
        fp32, bf16 = result["precisions"]["fp32"], result["precisions"]["bf16"]
        last = args.rounds - 1
        cos = torch.nn.functional.cosine_similarity(
            _features(Path(tmp.name) / f"bf16-out{last}"),
            _features(Path(tmp.name) / f"fp32-out{last}"),
            dim=1,
        )
        result["bf16_over_fp32"] = {
            "model_speedup": round(fp32["model_s"] / bf16["model_s"], 3),
            "end_to_end_speedup": round(fp32["end_to_end_s"] / bf16["end_to_end_s"], 3),
            "cos_min": round(float(cos.min()), 6),
        }
    if args.ray:
        import ray

        ray.shutdown()
    print(json.dumps(result))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

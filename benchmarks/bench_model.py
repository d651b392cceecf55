"""encode_video throughput per precision, against the machine's own GEMM rate in that precision.

    python benchmarks/bench_model.py [--configs tiny egovlp-base] [--precision fp32 bf16] [--batch 4]
                                     [--frames 4] [--threads 2] [--compile]

For each config and precision, side by side in one run: clips/s, FLOP per clip (counted by torch's
FlopCounterMode on the real fp32 forward), achieved GFLOP/s and its fraction of the best GEMM rate
measured just before in the same dtype (square and model-shaped GEMMs), and for bf16 the bf16/fp32
speed ratio and the smallest per-row cosine similarity to the fp32 embeddings of the same inputs.
Reduced precisions cast the weights once (`EgoVLP.set_precision`). CUDA rows follow when a GPU is
present. The last line is one JSON object for the last config: fp32_clips_s, bf16_clips_s, speedup,
cos_min, bf16_matmul_fraction.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import egovlp  # noqa: E402
from egovlp.precision import cpu_has_bf16_matmul  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(device: torch.device, dtype: torch.dtype, repeats: int) -> tuple[float, str]:
    """Best GEMM rate over a few shapes: square, and the base model's qkv and MLP GEMMs."""
    shapes = [(2048, 2048, 2048), (3140, 768, 3072), (3140, 3072, 768), (3140, 768, 2304)]
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_bf16_matmul():
        # emulated bf16 runs at a fraction of a GFLOP/s: one small GEMM tells the rate
        shapes = [(512, 768, 768)]
    if device.type == "cuda":
        shapes = [(8192, 8192, 8192), (12560, 768, 3072), (12560, 3072, 768)]
    best, best_shape = 0.0, ""
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        sec = timed(lambda a=a, b=b: a @ b, device, repeats)
        rate = 2 * m * k * n / sec / 1e9
        if rate > best:
            best, best_shape = rate, f"{m}x{k}x{n}"
    return best, best_shape


def _cpu_flash_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # torch counts the CUDA flash/efficient kernels but not the CPU flash kernel: same formula
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(model: egovlp.EgoVLP, frames: torch.Tensor) -> int:
    """FLOP of one forward, attention included (matmuls, convolution, QK^T and AV)."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.inference_mode():
        model.embed_video(frames)
    return counter.get_total_flops()


def bench_config(model: egovlp.EgoVLP, x: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """clips/s of encode_video on `x`, and the embeddings it returns (float32)."""
    sec = timed(lambda: model.encode_video(x), x.device, repeats)
    return x.shape[0] / sec, model.encode_video(x)


def parse_bench_args(
    argv: list[str] | None, doc: str | None, configs: list[str], batch: int, repeats: int
) -> argparse.Namespace:
    """The options bench_model and bench_train share; sets torch's CPU threads and seed."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=configs)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument(
        "--precision",
        nargs="+",
        default=["fp32", "bf16"],
        choices=["fp32", "bf16", "fp16"],
        help="precisions to run side by side (weights cast once); fp32 is the reference",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the video tower first")
    p.add_argument("--skip-cpu", action="store_true", help="CUDA rows only (when a GPU is present)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def _cos_min(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


def run_device(args: argparse.Namespace, device: torch.device) -> dict | None:
    """Every config in every precision on `device`, side by side; the summary of the last config."""
    from egovlp.config import resolve_model_config

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    # fp32 first: it is the reference of the cosine; fp16 is a CUDA precision
    precisions = ["fp32"] + [
        p for p in args.precision if p != "fp32" and (p != "fp16" or device.type == "cuda")
    ]
    peaks = {}
    for name in precisions:
        peaks[name], shape = matmul_gflops(device, dtypes[name], args.repeats)
        print(f"[{device.type}] {name} matmul {peaks[name]:.1f} GFLOP/s (best shape {shape})")
    summary = None
    for config in args.configs:
        cfg = resolve_model_config(config)
        torch.manual_seed(0)
        base = egovlp.create_model(cfg, device=str(device))
        size = cfg.video.img_size
        x = torch.randn(args.batch, args.frames, 3, size, size, device=device)
        flops = count_flops(base, x[:1])  # per clip, counted in fp32
        rows: dict[str, dict] = {}
        reference = None
        for name in precisions:
            model = base if name == "fp32" else copy.deepcopy(base).set_precision(name)
            if args.compile:
                model.video_model = torch.compile(model.video_model)
            clips_s, emb = bench_config(model, x, args.repeats)
            reference = emb if name == "fp32" else reference
            achieved = clips_s * flops / 1e9
            rows[name] = {
                "clips_s": clips_s,
                "fraction": achieved / peaks[name],
                "cos_min": 1.0 if reference is None or name == "fp32" else _cos_min(reference, emb),
            }
            print(
                f"[{device.type}] {config:<12} {name}: {clips_s:7.2f} clips/s  {flops / 1e9:7.1f} GFLOP/clip  "
                f"{achieved:8.1f} GFLOP/s  = {rows[name]['fraction']:.2f} of the {name} matmul rate"
                + (f"  cos_min vs fp32 {rows[name]['cos_min']:.5f}" if name != "fp32" else "")
            )
            if name != "fp32":
                del model
        if "fp32" in rows and "bf16" in rows:
            speedup = rows["bf16"]["clips_s"] / rows["fp32"]["clips_s"]
            print(f"[{device.type}] {config:<12} bf16 / fp32 speed: {speedup:.2f}x")
            summary = {
                "config": config,
                "device": device.type,
                "fp32_clips_s": round(rows["fp32"]["clips_s"], 4),
                "bf16_clips_s": round(rows["bf16"]["clips_s"], 4),
                "speedup": round(speedup, 3),
                "cos_min": round(rows["bf16"]["cos_min"], 6),
                "bf16_matmul_fraction": round(rows["bf16"]["fraction"], 3),
            }
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_bench_args(argv, __doc__, ["tiny", "egovlp-base"], batch=4, repeats=5)

    print(
        f"torch {torch.__version__}, {args.threads} CPU threads, batch {args.batch}, {args.frames} frames, "
        f"CPU bf16 matrix engine: {cpu_has_bf16_matmul()}"
    )
    summary = None
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        if device.type == "cpu" and args.skip_cpu:
            continue
        summary = run_device(args, device) or summary
    if summary is not None:
        print(json.dumps(summary))  # the last line: the bf16 / fp32 summary of the last config
    return 0


if __name__ == "__main__":
    sys.exit(main())

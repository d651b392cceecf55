"""encode_video throughput against the machine's own fp32 matmul rate, measured in the same run.

    python benchmarks/bench_model.py [--configs tiny egovlp-base] [--batch 4] [--frames 4] [--threads 2]

For each config: clips/s, FLOP per clip (counted by torch's FlopCounterMode on the real forward),
achieved GFLOP/s, and the ratio to the best fp32 GEMM rate measured just before (square and
model-shaped GEMMs; the best of them is the denominator). CUDA rows (bf16 autocast and fp32) are
added when a GPU is present.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import egovlp  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"


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


def bench_config(
    name: str, device: torch.device, batch: int, frames: int, repeats: int, amp: torch.dtype | None
):
    model = egovlp.create_model(CONFIGS / f"{name}.yaml", device=str(device))
    model.autocast_dtype = amp
    x = torch.randn(batch, frames, 3, model.cfg.video.img_size, model.cfg.video.img_size, device=device)
    flops = count_flops(model, x[:1])  # per clip
    sec = timed(lambda: model.encode_video(x), device, repeats)
    return batch / sec, flops


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
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_bench_args(argv, __doc__, ["tiny", "egovlp-base"], batch=4, repeats=5)

    runs = [(torch.device("cpu"), torch.float32, None)]
    if torch.cuda.is_available():
        runs += [
            (torch.device("cuda"), torch.float32, None),
            (torch.device("cuda"), torch.bfloat16, torch.bfloat16),
        ]
    print(f"torch {torch.__version__}, {args.threads} CPU threads, batch {args.batch}, {args.frames} frames")
    for device, mm_dtype, amp in runs:
        peak, shape = matmul_gflops(device, mm_dtype, args.repeats)
        label = f"{device.type}/{'bf16' if amp else 'fp32'}"
        print(f"[{label}] matmul peak {peak:.1f} GFLOP/s (best shape {shape})")
        for name in args.configs:
            clips_s, flops = bench_config(name, device, args.batch, args.frames, args.repeats, amp)
            achieved = clips_s * flops / 1e9
            print(
                f"[{label}] {name:<12} {clips_s:8.2f} clips/s  {flops / 1e9:7.1f} GFLOP/clip  "
                f"{achieved:8.1f} GFLOP/s  ratio to matmul {achieved / peak:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

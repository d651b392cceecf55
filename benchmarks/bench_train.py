"""Training throughput: one EgoNCE step (forward, backward, AdamW) in clips/s, next to the matmul rate.

    python benchmarks/bench_train.py [--configs tiny egovlp-base] [--batch 8] [--frames 4] [--threads 2]
        [--precision fp32 bf16] [--no-peak]

Synthetic tensors (no data loading), so this is the model's ceiling. FLOP per step are counted by
torch's FlopCounterMode on a real step (forward + backward); MFU = achieved / the measured matmul
rate of the same dtype. Each `--precision` (default: auto, bf16 on CUDA and fp32 on the CPU) runs the
trainer's policy: fp32 master weights and AdamW, the towers under autocast (egovlp.precision), the
loss in fp32. With fp32 and bf16 both given, the last lines are one JSON object per config:
`{"config", "fp32_clips_s", "bf16_clips_s", "speedup", "loss_fp32", "loss_bf16"}` (speedup = bf16/fp32).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import _cpu_flash_flops, matmul_gflops, parse_bench_args, timed  # noqa: E402

import egovlp  # noqa: E402
from egovlp.precision import PRECISIONS, Precision, resolve_precision  # noqa: E402
from egovlp.training import create_optimizer  # noqa: E402
from pretrain.config import TrainOptions  # noqa: E402
from pretrain.train import global_egonce  # noqa: E402


def make_step(name: str, device: torch.device, batch: int, frames: int, precision: Precision):
    torch.manual_seed(0)  # the same weights and batch for every precision
    model = egovlp.create_model(name, device=str(device)).train()
    opt = create_optimizer(model, lr=1e-4, weight_decay=0.01)
    size = model.cfg.video.img_size
    data = {
        "video": torch.randn(batch, frames, 3, size, size, device=device),
        "verb": (torch.rand(batch, 10, device=device) < 0.2).float(),
        "noun": (torch.rand(batch, 30, device=device) < 0.1).float(),
    }
    tokens = {
        k: v.to(device)
        for k, v in model.tokenizer([f"#C C picks up the cup {i}" for i in range(batch)]).items()
    }

    losses = []

    def step():
        loss = global_egonce(model, data, tokens, 0, 1, TrainOptions(), precision)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())

    return losses, step


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["auto"])
    # a CPU without bf16 instructions emulates bf16 GEMMs (~50x slower): its peak takes many minutes
    pre.add_argument("--no-peak", action="store_true", help="skip the matmul peak (and MFU)")
    known, rest = pre.parse_known_args(argv)
    args = parse_bench_args(rest, __doc__, ["tiny", "tiny-112", "egovlp-base"], batch=8, repeats=3)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rates: dict[str, dict[str, tuple[float, float]]] = {}
    for requested in known.precision:
        precision = resolve_precision(requested, device)
        label = f"{device.type}/{precision.name}"
        peak = float("nan") if known.no_peak else matmul_gflops(device, precision.dtype, args.repeats)[0]
        print(f"[{label}] matmul peak {peak:.1f} GFLOP/s", flush=True)
        for name in args.configs:
            losses, step = make_step(name, device, args.batch, args.frames, precision)
            mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops}
            with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
                step()
            flops = counter.get_total_flops()
            sec = timed(step, device, args.repeats, warmup=0)  # the counted step was the warm-up
            achieved = flops / sec / 1e9
            rates.setdefault(name, {})[precision.name] = (args.batch / sec, losses[0])
            print(
                f"[{label}] {name:<12} {args.batch / sec:7.2f} clips/s  {flops / 1e9:8.1f} GFLOP/step  "
                f"{achieved:7.1f} GFLOP/s  MFU {achieved / peak:.2f}  first loss {losses[0]:.4f}",
                flush=True,
            )
    for name, by_precision in rates.items():
        if {"fp32", "bf16"} <= set(by_precision):
            (fp32, loss32), (bf16, loss16) = by_precision["fp32"], by_precision["bf16"]
            row = {
                "config": name,
                "fp32_clips_s": round(fp32, 3),
                "bf16_clips_s": round(bf16, 3),
                "speedup": round(bf16 / fp32, 3),
                "loss_fp32": round(loss32, 5),
                "loss_bf16": round(loss16, 5),
            }
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())

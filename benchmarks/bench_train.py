"""Training throughput: one EgoNCE step (forward, backward, AdamW) in clips/s, next to the matmul rate.

    python benchmarks/bench_train.py [--configs tiny egovlp-base] [--batch 8] [--frames 4] [--threads 2]

Synthetic tensors (no data loading), so this is the model's ceiling. FLOP per step are counted by
torch's FlopCounterMode on a real step (forward + backward); MFU = achieved / measured fp32 matmul
rate on the CPU, or against the measured bf16 matmul rate on CUDA (bf16 autocast there).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import _cpu_flash_flops, matmul_gflops, parse_bench_args, timed  # noqa: E402

import egovlp  # noqa: E402
from egovlp.training import create_optimizer  # noqa: E402
from pretrain.config import TrainOptions  # noqa: E402
from pretrain.train import global_egonce  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"


def make_step(name: str, device: torch.device, batch: int, frames: int, amp: torch.dtype | None):
    model = egovlp.create_model(CONFIGS / f"{name}.yaml", device=str(device)).train()
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

    def step():
        with torch.autocast(device.type, dtype=amp) if amp else torch.autocast(device.type, enabled=False):
            loss = global_egonce(model, data, tokens, 0, 1, TrainOptions())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, step


def main(argv: list[str] | None = None) -> int:
    args = parse_bench_args(argv, __doc__, ["tiny", "tiny-112", "egovlp-base"], batch=8, repeats=3)
    runs = [(torch.device("cpu"), torch.float32, None)]
    if torch.cuda.is_available():
        runs = [(torch.device("cuda"), torch.bfloat16, torch.bfloat16)]
    for device, mm_dtype, amp in runs:
        peak, _ = matmul_gflops(device, mm_dtype, args.repeats)
        label = f"{device.type}/{'bf16' if amp else 'fp32'}"
        print(f"[{label}] matmul peak {peak:.1f} GFLOP/s")
        for name in args.configs:
            _, step = make_step(name, device, args.batch, args.frames, amp)
            mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops}
            with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
                step()
            flops = counter.get_total_flops()
            sec = timed(step, device, args.repeats, warmup=0)  # the counted step was the warm-up
            achieved = flops / sec / 1e9
            print(
                f"[{label}] {name:<12} {args.batch / sec:7.2f} clips/s  {flops / 1e9:8.1f} GFLOP/step  "
                f"{achieved:7.1f} GFLOP/s  MFU {achieved / peak:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

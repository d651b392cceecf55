"""Run under torchrun (2 CPU processes, gloo): one fine-tuning step of a global batch through accelerate.

Rank r takes rows [r*n, (r+1)*n) of a fixed global batch; rank 0 writes the loss averaged over the
processes and the DDP-averaged gradients to the JSON path in argv[1].
tests/finetune/test_finetune_distributed.py compares them with one process on the whole batch.
"""

from __future__ import annotations

import json
import sys

import torch
from accelerate import Accelerator

from finetune.model import FHOClassifier
from finetune.train import classification_loss
from tests.conftest import micro_config

GLOBAL_BATCH = 6


def build_model() -> FHOClassifier:
    torch.manual_seed(0)
    return FHOClassifier(micro_config(num_frames=16).video, num_classes=16).eval()  # eval: no dropout


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    frames = torch.randn(GLOBAL_BATCH, 16, 3, 32, 32, generator=gen)  # (B, F, 3, H, W)
    labels = torch.randint(0, 16, (GLOBAL_BATCH,), generator=gen)
    return frames, labels


def main(out: str) -> None:
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    model = build_model()
    frames, labels = fixed_batch()
    n = GLOBAL_BATCH // world
    ddp = accelerator.prepare(model)
    loss, _ = classification_loss(ddp, frames[rank * n : (rank + 1) * n], labels[rank * n : (rank + 1) * n])
    accelerator.backward(loss)
    mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
    if accelerator.is_main_process:
        grads = {
            name: p.grad.flatten()[:40].tolist() for name, p in model.named_parameters() if p.grad is not None
        }
        with open(out, "w") as f:
            json.dump({"world": world, "loss": mean_loss, "grads": grads}, f)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])

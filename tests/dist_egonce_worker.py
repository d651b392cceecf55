"""Run under torchrun (2 CPU processes, gloo): one EgoNCE step of the global batch through accelerate.

Rank r takes rows [r*n, (r+1)*n) of a fixed global batch; rank 0 writes the loss and the
averaged gradients to the JSON path given as argv[1]. tests/test_pretrain_distributed.py compares
them with one process on the whole batch.
"""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator

from egovlp.model import EgoVLP
from pretrain.config import TrainOptions
from pretrain.train import global_egonce
from tests.conftest import micro_config

GLOBAL_BATCH = 8


def fixed_batch(model: EgoVLP) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(123)
    video = torch.randn(GLOBAL_BATCH, 2, 3, 32, 32, generator=gen)
    verb = (torch.rand(GLOBAL_BATCH, 5, generator=gen) < 0.4).float()
    noun = (torch.rand(GLOBAL_BATCH, 7, generator=gen) < 0.3).float()
    texts = [f"#C C picks up the cup number {i}" for i in range(GLOBAL_BATCH)]
    tokens = model.tokenizer(texts)
    # pad every rank to the same length so the text tower sees identical inputs
    return {"video": video, "verb": verb, "noun": noun}, tokens


def build_model() -> EgoVLP:
    torch.manual_seed(0)
    return EgoVLP(micro_config(num_frames=2)).eval()  # eval: no dropout, so runs are comparable


def main(out: str) -> None:
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    model = build_model()
    batch, tokens = fixed_batch(model)
    n = GLOBAL_BATCH // world
    local = {k: v[rank * n : (rank + 1) * n] for k, v in batch.items()}
    local_tokens = {k: v[rank * n : (rank + 1) * n] for k, v in tokens.items()}
    ddp = accelerator.prepare(model)
    loss = global_egonce(ddp, local, local_tokens, rank, world, TrainOptions())
    accelerator.backward(loss * world)
    if accelerator.is_main_process:
        import json

        grads = {
            name: p.grad.flatten()[:50].tolist() for name, p in model.named_parameters() if p.grad is not None
        }
        with open(out, "w") as f:
            json.dump({"world": world, "loss": loss.item(), "grads": grads}, f)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])

"""Two CPU processes (gloo, torchrun + accelerate) see the global batch: same loss, same gradients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from pretrain.config import TrainOptions
from pretrain.train import global_egonce
from tests.dist_egonce_worker import build_model, fixed_batch

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_loss_and_gradients_equal_one_process(tmp_path):
    out = tmp_path / "rank0.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "tests" / "dist_egonce_worker.py"),
        str(out),
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["world"] == 2

    model = build_model()
    batch, tokens = fixed_batch(model)
    loss = global_egonce(model, batch, tokens, 0, 1, TrainOptions())
    loss.backward()
    assert abs(two["loss"] - loss.item()) < 1e-5
    checked = 0
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        torch.testing.assert_close(
            torch.tensor(two["grads"][name]), p.grad.flatten()[:50], rtol=1e-4, atol=2e-5
        )  # fp32 sums in another order
        checked += 1
    assert checked > 20

"""Two CPU processes (gloo, torchrun + accelerate) give the gradients of one process on the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from finetune.train import classification_loss
from tests.finetune.finetune_dist_worker import build_model, fixed_batch

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_give_the_gradients_of_one(tmp_path):
    out = tmp_path / "rank0.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(ROOT / "tests" / "finetune" / "finetune_dist_worker.py"), str(out)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["world"] == 2

    model = build_model()
    frames, labels = fixed_batch()
    loss, _ = classification_loss(model, frames, labels)
    loss.backward()
    assert abs(two["loss"] - loss.item()) < 1e-5
    checked = 0
    for name, p in model.named_parameters():
        torch.testing.assert_close(
            torch.tensor(two["grads"][name]), p.grad.flatten()[:40], rtol=1e-4, atol=1e-6
        )
        checked += 1
    assert checked == len(two["grads"]) > 20

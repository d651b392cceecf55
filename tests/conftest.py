"""Shared fixtures: tiny model configs built in code so tests stay fast on 2 CPU cores."""

from __future__ import annotations

import os

# `--precision auto` resolves to fp32 on every CPU in the suite (and in the commands it starts), so
# the fp32 references hold whether or not the machine has a bf16 matrix engine; the bf16 paths are
# tested by naming bf16 (tests/test_precision.py checks the probe itself).
os.environ["EGOVLP_CPU_BF16"] = "0"

import pytest  # noqa: E402
import torch  # noqa: E402

from egovlp.config import ModelConfig, TextTowerConfig, VideoTowerConfig  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


def micro_config(num_frames: int = 4, img_size: int = 32, patch_size: int = 8) -> ModelConfig:
    """A model small enough to run dozens of forwards per second on the CPU."""
    return ModelConfig(
        video=VideoTowerConfig(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=32,
            depth=2,
            num_heads=4,
            num_frames=num_frames,
        ),
        text=TextTowerConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=64),
        projection_dim=16,
        name="micro",
    )


@pytest.fixture
def micro_cfg() -> ModelConfig:
    return micro_config()

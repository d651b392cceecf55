"""Shared fixtures: tiny model configs built in code so tests stay fast on 2 CPU cores."""

from __future__ import annotations

import os

import pytest
import torch

from egovlp.config import ModelConfig, TextTowerConfig, VideoTowerConfig

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

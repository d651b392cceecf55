"""Pretraining options: a YAML file (configs/pretrain/*.yaml) plus `key=value` overrides.

Loaded by the project's one config loader (`egovlp.config.load_config_file`): typed fields, limits on
the fields, unknown keys refused, every error one line naming the key and the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from pydantic.dataclasses import dataclass

from egovlp.config import STRICT_KEYS, find_config, load_config_file
from egovlp.training import PrecisionName


@dataclass(config=STRICT_KEYS)
class DataOptions:
    shards: str = ""  # a shard directory, a brace pattern, or a list file
    batch_size: PositiveInt = 16  # clips per process per step; each brings its negative (2x in the loss)
    num_workers: NonNegativeInt = 2
    shuffle_buffer: PositiveInt = 500
    taxonomy: str = ""  # folder with verb_taxonomy.json / noun_taxonomy.json


@dataclass(config=STRICT_KEYS)
class EgoMCQOptions:
    data: str = ""  # egomcq.json; empty disables validation
    videos: str = ""
    every: NonNegativeInt = 0  # validate every N steps (0: only at the end)
    num_frames: PositiveInt = 4
    batch_size: PositiveInt = 16
    num_workers: NonNegativeInt = 2


@dataclass(config=STRICT_KEYS)
class TrainOptions:
    steps: PositiveInt = 1000
    lr: PositiveFloat = 3e-5
    weight_decay: NonNegativeFloat = 0.01
    warmup_steps: NonNegativeInt = 100
    grad_clip: NonNegativeFloat = 1.0  # 0 disables clipping
    grad_accum: PositiveInt = 1
    temperature: PositiveFloat = 0.05
    verb: bool = True  # EgoNCE action-aware positives; both False = InfoNCE
    noun: bool = True
    freeze_text: bool = False
    grad_checkpointing: bool = False
    seed: NonNegativeInt = 0
    log_every: PositiveInt = 10
    checkpoint_every: NonNegativeInt = 200  # 0: only the final save
    keep_checkpoints: PositiveInt = 2
    # egovlp.precision's vocabulary; bf16 on the CPU autocasts over fp32 master weights
    precision: PrecisionName = "auto"


@dataclass(config=STRICT_KEYS)
class PretrainConfig:
    model: str = "tiny"  # a packaged model config name or a model YAML path
    init: str = ""  # "" (random), an EgoVLP checkpoint/dir, or "vit:PATH" (timm ViT state dict)
    output_dir: str = "runs/pretrain"
    data: DataOptions = field(default_factory=DataOptions)
    egomcq: EgoMCQOptions = field(default_factory=EgoMCQOptions)
    train: TrainOptions = field(default_factory=TrainOptions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_pretrain_config(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """Defaults, then the YAML `path` (a packaged name like `demo`, or a path), then `key.sub=value`
    overrides."""
    return load_config_file(PretrainConfig, find_config("pretrain", path) if path else None, overrides)

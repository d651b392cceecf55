"""Fine-tuning options (typed, with their limits; saved as the run's config.json)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from pydantic.dataclasses import dataclass

from egovlp.config import STRICT_KEYS
from egovlp.training import PrecisionName

# B.7: 10 epochs at the pretraining learning rate (EgoVLP pretrained at 3e-5)
DEFAULT_EPOCHS = 10
DEFAULT_LR = 3e-5


@dataclass(config=STRICT_KEYS)
class FinetuneConfig:
    task: Literal["oscc", "pnr"]
    ann: str  # fho_oscc-pnr_train.json
    videos: str  # folder of {video_uid}.mp4 (or 600 s chunk folders)
    output_dir: str
    init: str = "random"  # EgoVLP .pth, converted folder, "vit:PATH", or "random"
    model: str = ""  # model YAML (random / vit init, or a .pth of another architecture)
    num_frames: PositiveInt = 16
    img_size: PositiveInt | None = None  # default: the starting model's
    epochs: PositiveInt = DEFAULT_EPOCHS
    batch_size: PositiveInt = 8  # per process
    lr: PositiveFloat = DEFAULT_LR
    weight_decay: NonNegativeFloat = 0.01
    warmup_steps: NonNegativeInt = 0
    grad_clip: NonNegativeFloat = 1.0  # 0 disables clipping
    num_workers: NonNegativeInt = 2
    cache: bool = False  # decode every clip once and keep the frames in memory
    seed: NonNegativeInt = 0
    checkpoint_every: NonNegativeInt = 0  # steps; 0 = at the end of every epoch
    keep_checkpoints: PositiveInt = 2
    precision: PrecisionName = "auto"  # egovlp.precision's vocabulary; CPU bf16 = autocast, fp32 weights

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

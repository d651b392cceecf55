"""Frame preprocessing of docs/design.md B.3: uint8 frames -> normalized float clips for the video tower.

Eval: Resize(256) on the short side -> CenterCrop(256) -> Resize(size) -> /255 -> ImageNet normalize.
Train: RandomResizedCrop(size, scale=(0.5, 1.0)) + horizontal flip (p=0.5), one crop and one flip
drawn per clip and applied to every frame, then normalize. `load_clip` is the one-call path
(sample times -> decode -> transform) used by `egovlp embed` and the EgoMCQ evaluation.
"""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from egovlp.video import clip_sample_times, read_frames_at

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

EVAL_RESIZE = 256
TRAIN_SCALE = (0.5, 1.0)
TRAIN_RATIO = (3 / 4, 4 / 3)


def _to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [F, H, W, 3] (numpy or torch) -> uint8 [F, 3, H, W]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames [F, H, W, 3], got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got {x.dtype}")
    return x.permute(0, 3, 1, 2)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 [F, 3, H, W] -> float32 in [0, 1] -> ImageNet-normalized."""
    x = x.to(torch.float32).div_(255.0)
    return TF.normalize(x, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


def eval_transform(frames: np.ndarray | torch.Tensor, size: int = 224) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float32 [F, 3, size, size] (B.3 eval pipeline)."""
    x = _to_tensor(frames)  # [F, 3, H, W]
    x = TF.resize(x, [EVAL_RESIZE], antialias=True)  # short side 256
    x = TF.center_crop(x, [EVAL_RESIZE, EVAL_RESIZE])  # [F, 3, 256, 256]
    x = TF.resize(x, [size, size], antialias=True)  # [F, 3, size, size]
    return _normalize(x)


def random_resized_crop_params(
    height: int, width: int, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop with scale (0.5, 1.0), ratio (3/4, 4/3).

    The usual rejection sampling (10 tries, then a central crop with the ratio clamped), drawn
    from `generator` so a seeded loader is reproducible.
    """
    area = height * width
    log_ratio = (math.log(TRAIN_RATIO[0]), math.log(TRAIN_RATIO[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target_area = area * (TRAIN_SCALE[0] + u[0] * (TRAIN_SCALE[1] - TRAIN_SCALE[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < TRAIN_RATIO[0]:
        w, h = width, round(width / TRAIN_RATIO[0])
    elif in_ratio > TRAIN_RATIO[1]:
        h, w = height, round(height * TRAIN_RATIO[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_transform(
    frames: np.ndarray | torch.Tensor, size: int = 224, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float32 [F, 3, size, size]; one random crop and flip for the whole clip."""
    x = _to_tensor(frames)  # [F, 3, H, W]
    top, left, h, w = random_resized_crop_params(x.shape[-2], x.shape[-1], generator)
    x = TF.resized_crop(x, top, left, h, w, [size, size], antialias=True)  # [F, 3, size, size]
    if float(torch.rand(1, generator=generator)) < 0.5:
        x = TF.horizontal_flip(x)
    return _normalize(x)


def load_clip(
    path: str | os.PathLike,
    start: float,
    end: float,
    num_frames: int = 4,
    train: bool = False,
    size: int = 224,
    rng: random.Random | None = None,
) -> torch.Tensor:
    """Video file + [start, end] seconds -> float32 [num_frames, 3, size, size], ready for the model.

    Eval takes the middle of each of num_frames equal intervals, train a random time in each and
    the random crop/flip (rng seeds both; a fresh unseeded one when None).
    """
    if train:
        rng = rng if rng is not None else random.Random()
        times = clip_sample_times(start, end, num_frames, "random", rng)
        frames = read_frames_at(path, times)  # [F, H, W, 3]
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        return train_transform(frames, size, generator)
    times = clip_sample_times(start, end, num_frames, "middle")
    return eval_transform(read_frames_at(path, times), size)

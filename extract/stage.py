"""The model stage: which model a worker loads (`ModelSpec`), loading it, and the model over rows.

A worker (this process for the local engine, each Ray replica) loads the model with
`load_extract_model`: weights cast once to the run's precision (`EgoVLP.set_precision`, docs/design.md
D), no autocast. `model_step` turns uint8 frames into the named per-row outputs the collector writes;
`run_chunk` runs one output's chunk of rows in batches that start at multiples of the batch size, so
an output's numbers do not depend on the engine or on what else runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from egovlp.features import model_identity
from egovlp.precision import resolve_precision
from extract.reader import normalize

ModelStep = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class ModelSpec:
    """How a worker loads the model (a Ray actor loads its own copy)."""

    path: str
    config: str | None = None
    device: str = "cpu"
    precision: str = "fp32"  # resolved by egovlp.precision.resolve_precision: fp32 | bf16 | fp16


def load_extract_model(spec: ModelSpec):
    """The model in eval mode on `spec.device`, its weights cast once to `spec.precision`."""
    import egovlp

    model = egovlp.load_model(spec.path, config=spec.config, device=spec.device)
    # the sidecar's weights hash names the checkpoint, not its cast: hash before casting, so fp32
    # and bf16 features of one checkpoint carry the same identity (docs/design.md B.6)
    model_identity(model, Path(spec.path).name)
    model.set_precision(resolve_precision(spec.precision, model.device))
    return model.eval()


def model_step(model, preset: str) -> ModelStep:
    """uint8 frames [B, F, 3, S, S] on the model's device -> named per-row outputs (tensors)."""
    video = model.video_model
    grid_side = model.cfg.video.img_size // model.cfg.video.patch_size

    def step(frames: torch.Tensor) -> dict[str, torch.Tensor]:
        x = normalize(frames).to(model.dtype)  # [B, F, 3, S, S] in the weights' dtype
        with torch.inference_mode():
            if preset == "vq2d":
                tokens = video.forward_tokens(x)[:, 1:]  # [B, 1*P, D], CLS dropped (one frame per row)
                grid = tokens.reshape(len(x), grid_side, grid_side, -1)  # [B, h, w, D]
                return {"grid": grid.to(torch.float16)}
            cls = video(x)  # [B, 768] pre-projection CLS
            return {"features": model.vid_proj(cls).float(), "cls_768": cls.float()}

    return step


def run_chunk(model, step: ModelStep, frames: torch.Tensor, batch_size: int) -> dict[str, np.ndarray]:
    """Rows [n, F, 3, S, S] uint8 of one output, in batches from the chunk's start (chunks start at
    multiples of the batch size) -> {name: [n, ...] numpy}."""
    parts: dict[str, list[np.ndarray]] = {}
    for b0 in range(0, len(frames), batch_size):
        x = frames[b0 : b0 + batch_size].to(model.device, non_blocking=True)  # [B, F, 3, S, S] uint8
        for key, value in step(x).items():
            parts.setdefault(key, []).append(value.cpu().numpy())
    return {key: np.concatenate(values) for key, values in parts.items()}

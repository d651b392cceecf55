"""The fine-tuned model: EgoVLP's video tower with a linear head (B.7), and its saved folder.

OSCC has 2 classes (no state change, state change): a linear layer on the video CLS feature. PNR has
16 (which of the 16 input frames is the point of no return): one linear layer scores, for each frame
i, how the frames from i on differ from the frames before i (the mean of each frame's patch tokens,
averaged over the frames after minus over the frames before), so class i is tied to frame i and the
score is high where the state steps from one look to the other. A CLS head memorized the synthetic
train clips and did not localize; a head on one frame's change from the previous frame ("frame",
still loadable) was confused by the hand's motion, which a contrast over all frames averages out.
The tower starts from an EgoVLP checkpoint (.pth), a converted folder, a timm
image ViT (`vit:PATH`) or random weights; its `temporal_embed` is fitted to 16 frames (truncated or
zero-padded, B.2) and its `pos_embed` resampled (`egovlp.checkpoint.fit_pos_embed`) when the input
size differs from the checkpoint's.

A saved model is a folder: `model.safetensors` (`video_model.*`, `head.*`) and `config.json`
(`task`, `num_classes`, `head` = "cls" | "frame" | "step", `family`, `num_frames`, `video` = the
tower's VideoTowerConfig, `init`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from egovlp.checkpoint import fit_pos_embed
from egovlp.config import (
    ModelConfig,
    VideoTowerConfig,
    base_config,
    config_from_dict,
    load_config,
    resolve_model_config,
)
from egovlp.errors import CheckpointError, InputError
from egovlp.video_tower import SpaceTimeTransformer

log = logging.getLogger(__name__)

TASK_CLASSES = {"oscc": 2, "pnr": 16}
TASK_HEADS = {"oscc": "cls", "pnr": "step"}
HEADS = ("cls", "frame", "step")
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class FHOClassifier(nn.Module):
    """frames `[B, F, 3, H, W]` -> logits `[B, num_classes]`.

    head "cls": video CLS -> Linear(D, num_classes). Heads "frame" and "step" (num_classes == F) use
    each frame's mean patch token f_j and give logit i = Linear(D, 1) of: "frame" f_i - f_(i-1);
    "step" mean(f_i..f_(F-1)) - mean(f_0..f_(i-1)) (0 for i = 0, which has no frame before it).
    """

    def __init__(
        self, video: VideoTowerConfig, num_classes: int, head: str = "cls", family: str = "egovlp"
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.video_cfg = video
        self.family = family  # the checkpoint family the tower came from (docs/checkpoints.md)
        self.head_type = head
        self.video_model = SpaceTimeTransformer(video)
        self.head = nn.Linear(video.embed_dim, num_classes if head == "cls" else 1)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.head_type == "cls":
            return self.head(self.video_model(frames))  # (B, D) -> (B, C)
        B, Fr = frames.shape[:2]
        tokens = self.video_model.forward_tokens(frames)[:, 1:]  # (B, F*P, D), CLS dropped
        per_frame = tokens.reshape(B, Fr, -1, tokens.shape[-1]).mean(2)  # (B, F, D)
        if self.head_type == "frame":  # what changed since the previous frame (nothing at frame 0)
            change = per_frame - torch.cat([per_frame[:, :1], per_frame[:, :-1]], dim=1)  # (B, F, D)
        else:
            change = step_contrast(per_frame)
        return self.head(change).squeeze(-1)  # (B, F): class i = frame i


def step_contrast(per_frame: torch.Tensor) -> torch.Tensor:
    """(B, F, D) -> (B, F, D): row i = mean of frames i.. minus mean of frames ..i-1 (row 0: zeros)."""
    B, Fr, D = per_frame.shape
    csum = torch.cat([per_frame.new_zeros(B, 1, D), per_frame.cumsum(1)], dim=1)  # (B, F+1, D)
    n_before = torch.arange(Fr, device=per_frame.device, dtype=per_frame.dtype)  # frames before i
    before = csum[:, :-1] / n_before.clamp(min=1)[None, :, None]  # (B, F, D)
    after = (csum[:, -1:] - csum[:, :-1]) / (Fr - n_before)[None, :, None]  # (B, F, D)
    contrast = after - before
    contrast[:, 0] = 0  # no frame before frame 0: no step can start there
    return contrast


def _model_config(init: str, model_yaml: str) -> ModelConfig:
    """The architecture `init` was trained with: --model YAML, a folder's config.json, or the base."""
    if model_yaml:
        return resolve_model_config(model_yaml)
    path = Path(init)
    if init not in ("", "random") and not init.startswith("vit:") and path.is_dir():
        if (path / CONFIG_NAME).is_file():
            return load_config(path / CONFIG_NAME)
    return base_config()


def create_classifier(
    task: str, init: str, model_yaml: str = "", num_frames: int = 16, img_size: int | None = None
) -> FHOClassifier:
    """A classifier for `task` whose tower starts from `init` (see the module docstring)."""
    from egovlp.training import create_model_from_init

    cfg = _model_config(init, model_yaml)
    source = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, num_frames=num_frames))
    egovlp_model = create_model_from_init(init, source)
    video = dataclasses.replace(source.video, img_size=img_size or source.video.img_size)
    if video.img_size % video.patch_size:
        raise InputError(
            f"--img-size {video.img_size}: must be a multiple of the patch size {video.patch_size}"
        )
    model = FHOClassifier(video, TASK_CLASSES[task], TASK_HEADS[task], family=cfg.family)
    state = egovlp_model.video_model.state_dict()
    state["pos_embed"] = fit_pos_embed(state["pos_embed"], model.video_model.pos_embed.shape[1] - 1)
    model.video_model.load_state_dict(state)
    return model


def save_classifier(
    model: FHOClassifier, folder: str | os.PathLike, task: str, extra: dict | None = None
) -> None:
    """Weights (safetensors) and config.json, both written atomically with the umask's mode."""
    from safetensors.torch import save_file

    from egovlp.io import atomic_path, write_json_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    config = {
        "task": task,
        "num_classes": TASK_CLASSES[task],
        "head": model.head_type,
        "family": model.family,
        "num_frames": model.video_cfg.num_frames,
        "video": dataclasses.asdict(model.video_cfg),
        **(extra or {}),
    }
    write_json_atomic(config, folder / CONFIG_NAME, indent=2)


def resolve_model_folder(path: str | os.PathLike) -> Path:
    """A saved classifier folder, a run folder (its `final/`), or a checkpoint (its `model/`)."""
    path = Path(path)
    for candidate in (path, path / "final", path / "model"):
        if (candidate / WEIGHTS_NAME).is_file() and (candidate / CONFIG_NAME).is_file():
            return candidate
    raise InputError(
        f"{path}: no fine-tuned model here (expected {WEIGHTS_NAME} and {CONFIG_NAME}, or final/)"
    )


def load_classifier(path: str | os.PathLike) -> tuple[FHOClassifier, dict[str, Any]]:
    """(model in eval mode, its config.json) from a folder `save_classifier` wrote."""
    from safetensors.torch import load_file

    from egovlp.checkpoint import load_state_dict_strict

    folder = resolve_model_folder(path)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{folder / CONFIG_NAME}: unreadable ({err})") from None
    if not isinstance(config, dict) or config.get("task") not in TASK_CLASSES:
        raise InputError(f"{folder / CONFIG_NAME}: expected a fine-tuned model config with task oscc or pnr")
    video = config_from_dict(VideoTowerConfig, config.get("video"), f"{folder / CONFIG_NAME}: video")
    head = config.get("head", "cls")
    if head not in HEADS:
        raise InputError(f"{folder / CONFIG_NAME}: head {head!r} is not one of {', '.join(HEADS)}")
    family = str(config.get("family", "egovlp"))  # folders saved before the families: EgoVLP's
    model = FHOClassifier(video, TASK_CLASSES[config["task"]], head, family=family)
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except Exception as err:  # noqa: BLE001 - a corrupt file is the user's input
        raise CheckpointError(f"{folder / WEIGHTS_NAME}: not a readable safetensors file ({err})") from None
    load_state_dict_strict(model, state, str(folder / WEIGHTS_NAME))
    return model.eval(), config

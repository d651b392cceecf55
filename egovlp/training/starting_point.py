"""The model a training run starts from: random weights, a timm image ViT, or an EgoVLP checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from egovlp.errors import InputError


def read_vit_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A timm-named image ViT state dict from a .safetensors or torch file (never unpickles objects)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ViT state dict not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input
        raise InputError(f"{path}: not a readable ViT state dict ({str(err).splitlines()[0]})") from None
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"{path}: expected a state dict of tensors")
    return state


def create_model_from_init(init: str, config):
    """The EgoVLP model a run starts from.

    `init`: "" or "random" (random weights of `config`), "vit:PATH" (the video tower from a timm
    image ViT, docs/design.md B.1; the rest random), or an EgoVLP checkpoint (.pth) / converted folder.
    `config`: a packaged name, a model YAML path or a ModelConfig (None: the checkpoint's own, or the base).
    """
    import egovlp
    from egovlp.config import resolve_model_config
    from egovlp.model import EgoVLP
    from egovlp.video_tower import video_tower_state_from_vit

    if init in ("", "random") or init.startswith("vit:"):
        cfg = resolve_model_config(config or None)
        model = EgoVLP(cfg)
        if init.startswith("vit:"):
            try:
                state = video_tower_state_from_vit(read_vit_state(init[4:]), model.video_model)
            except ValueError as err:
                raise InputError(f"{init[4:]}: does not fit the video tower ({err})") from None
            model.video_model.load_state_dict(state)
        return model
    return egovlp.load_model(init, config=config)

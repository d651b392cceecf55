"""egovlp: egocentric video-language pretraining (EgoVLP) as a library.

    import egovlp
    model = egovlp.load_model("egovlp.pth")         # or a directory from save_pretrained / convert
    v = model.encode_video(frames)                  # [B, F, 3, 224, 224] -> [B, 256]
    t = model.encode_text(["#C C opens the fridge"])

Names are imported on first use, so `egovlp.errors` or the metric readers start without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "egovlp.checkpoint",
    "save_pretrained": "egovlp.checkpoint",
    "convert_checkpoint": "egovlp.checkpoint",
    "create_model": "egovlp.model",
    "EgoVLP": "egovlp.model",
    "ModelConfig": "egovlp.config",
    "VideoTowerConfig": "egovlp.config",
    "TextTowerConfig": "egovlp.config",
    "load_config": "egovlp.config",
    "list_models": "egovlp.config",
    "InputError": "egovlp.errors",
    "VideoReadError": "egovlp.errors",
    "CheckpointError": "egovlp.errors",
}

__all__ = [
    "CheckpointError",
    "EgoVLP",
    "InputError",
    "ModelConfig",
    "TextTowerConfig",
    "VideoReadError",
    "VideoTowerConfig",
    "convert_checkpoint",
    "create_model",
    "list_models",
    "load_config",
    "load_model",
    "save_pretrained",
]

if TYPE_CHECKING:
    from egovlp.checkpoint import convert_checkpoint, load_model, save_pretrained
    from egovlp.config import ModelConfig, TextTowerConfig, VideoTowerConfig, list_models, load_config
    from egovlp.errors import CheckpointError, InputError, VideoReadError
    from egovlp.model import EgoVLP, create_model


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'egovlp' has no attribute {name!r}")

"""Model configuration: the YAML schema of DESIGN.md A loaded into small dataclasses."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from egovlp.errors import InputError


@dataclass
class VideoTowerConfig:
    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    num_frames: int = 16  # size of temporal_embed; inputs may have F <= num_frames frames

    @property
    def patches_per_frame(self) -> int:
        return (self.img_size // self.patch_size) ** 2


@dataclass
class TextTowerConfig:
    dim: int = 768
    n_layers: int = 6
    n_heads: int = 12
    hidden_dim: int = 3072
    vocab_size: int = 30522
    max_position_embeddings: int = 512


@dataclass
class ModelConfig:
    video: VideoTowerConfig = field(default_factory=VideoTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    projection_dim: int = 256
    name: str = "egovlp-base"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Short stable hash of the architecture, written next to every feature file."""
        arch = {k: v for k, v in self.to_dict().items() if k != "name"}
        return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelConfig:
        known = {"video", "text", "projection_dim", "name"}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"{source}: unknown model config keys {sorted(unknown)}")
        try:
            video = VideoTowerConfig(**(data.get("video") or {}))
            text = TextTowerConfig(**(data.get("text") or {}))
        except TypeError as err:  # an unknown field inside video/text
            raise InputError(f"{source}: {err}") from None
        return cls(
            video=video,
            text=text,
            projection_dim=int(data.get("projection_dim", 256)),
            name=str(data.get("name", Path(source).stem if source != "config" else "egovlp")),
        )


def load_config(path: str | os.PathLike) -> ModelConfig:
    """Read a model YAML (configs/model/*.yaml) or a config.json written by save_pretrained."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model config not found")
    try:
        with open(path) as f:
            data = json.load(f) if path.suffix == ".json" else yaml.safe_load(f)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not valid YAML/JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    data.setdefault("name", path.stem)
    return ModelConfig.from_dict(data, source=str(path))


def base_config() -> ModelConfig:
    """The published EgoVLP architecture (DESIGN.md B.1)."""
    return ModelConfig()

"""Pretraining options: a YAML file (configs/pretrain/*.yaml) plus `key=value` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from egovlp.errors import InputError


@dataclass
class DataOptions:
    shards: str = ""  # a shard directory, a brace pattern, or a list file
    batch_size: int = 16  # clips per process per step; each brings its negative (2x in the loss)
    num_workers: int = 2
    shuffle_buffer: int = 500
    taxonomy: str = ""  # folder with verb_taxonomy.json / noun_taxonomy.json


@dataclass
class EgoMCQOptions:
    data: str = ""  # egomcq.json; empty disables validation
    videos: str = ""
    every: int = 0  # validate every N steps (0: only at the end)
    num_frames: int = 4
    batch_size: int = 16
    num_workers: int = 2


@dataclass
class TrainOptions:
    steps: int = 1000
    lr: float = 3e-5
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    grad_accum: int = 1
    temperature: float = 0.05
    verb: bool = True  # EgoNCE action-aware positives; both False = InfoNCE
    noun: bool = True
    freeze_text: bool = False
    grad_checkpointing: bool = False
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    mixed_precision: str = "auto"  # auto = bf16 on CUDA, fp32 (no) on CPU; or "no" / "bf16" / "fp16"


@dataclass
class PretrainConfig:
    model: str = "configs/model/tiny.yaml"  # model YAML
    init: str = ""  # "" (random), an EgoVLP checkpoint/dir, or "vit:PATH" (timm ViT state dict)
    output_dir: str = "runs/pretrain"
    num_frames: int = 4
    data: DataOptions = field(default_factory=DataOptions)
    egomcq: EgoMCQOptions = field(default_factory=EgoMCQOptions)
    train: TrainOptions = field(default_factory=TrainOptions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _convert(value: str, current: Any, key: str) -> Any:
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise InputError(f"override {key}={value}: expected true/false")
    try:
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
    except ValueError:
        raise InputError(f"override {key}={value}: expected a {type(current).__name__}") from None
    return value


def _apply(obj: Any, data: dict[str, Any], where: str) -> None:
    for key, value in data.items():
        if not hasattr(obj, key):
            raise InputError(f"{where}: unknown option {key!r}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise InputError(f"{where}.{key}: expected a mapping")
            _apply(current, value, f"{where}.{key}")
        else:
            setattr(
                obj, key, value if not isinstance(value, str) else _convert(value, current, f"{where}.{key}")
            )


def load_pretrain_config(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    cfg = PretrainConfig()
    if path:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: pretrain config not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise InputError(f"{p}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise InputError(f"{p}: expected a mapping at the top level")
        _apply(cfg, data, str(p))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"override {item!r}: expected key=value (e.g. train.lr=1e-4)")
        target, *path_keys = key.split(".")
        nested: dict[str, Any] = {path_keys[-1]: value} if path_keys else {target: value}
        for k in reversed(path_keys[:-1]):
            nested = {k: nested}
        _apply(cfg, {target: nested} if path_keys else nested, "override")
    return cfg

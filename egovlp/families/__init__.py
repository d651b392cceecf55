"""Checkpoint families: which published model a state dict comes from, and how to read it.

Each family lives in its own file and gives the same things (the timm `checkpoint_filter_fn`
habit): its `NAME` (ModelConfig.family) and `TITLE`, `SENTINELS` (keys that recognise its published
layout), a pure `filter_state_dict(state, cfg)` from the published key names to ours,
`infer_config(state, args)` (the architecture from the tensor shapes when no config is given), and
what it leaves out (`IGNORED`, for the docs and the README). `Family.of(module)` reads them, in one
place for every family. docs/checkpoints.md describes every family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from egovlp.config import FAMILIES, ModelConfig
from egovlp.errors import CheckpointError

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Family:
    name: str  # ModelConfig.family
    title: str  # how its papers spell it
    # every key of one tuple present -> this family's layout; several tuples: published, ours
    sentinels: tuple[tuple[str, ...], ...]
    filter_state_dict: Callable[[State, ModelConfig], State]
    infer_config: Callable[[State, Mapping[str, Any] | None], ModelConfig]
    ignored: tuple[str, ...]  # what the dual encoder does not use, in words

    @classmethod
    def of(cls, module: ModuleType) -> Family:
        """The family a family module (egovlp/families/<name>.py) describes."""
        return cls(
            name=module.NAME,
            title=module.TITLE,
            sentinels=module.SENTINELS,
            filter_state_dict=module.filter_state_dict,
            infer_config=module.infer_config,
            ignored=module.IGNORED,
        )

    def matches(self, state: Mapping[str, torch.Tensor]) -> bool:
        return any(all(k in state for k in keys) for keys in self.sentinels)


def _registry() -> dict[str, Family]:
    from egovlp.families import egovlp, egovlpv2, lavila

    # detection order: LaViLa and EgoVLPv2 before EgoVLP (see detect_family)
    families = [Family.of(module) for module in (lavila, egovlpv2, egovlp)]
    return {f.name: f for f in families}


def get_family(name: str) -> Family:
    registry = _registry()
    if name not in registry:
        raise CheckpointError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return registry[name]


def detect_family(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> Family:
    """The family whose sentinel keys the state dict holds (LaViLa and EgoVLPv2 first: both are
    more specific than EgoVLP's). None matches: one CheckpointError naming what was found."""
    for family in _registry().values():
        if family.matches(state):
            return family
    keys = sorted(state)
    prefixes = sorted({k.split(".")[0] for k in keys})
    raise CheckpointError(
        f"{source}: not a checkpoint of a known family (EgoVLP, LaViLa, EgoVLPv2): found "
        f"{len(keys)} tensors under {', '.join(prefixes[:8]) or 'nothing'}"
        f"{' ...' if len(prefixes) > 8 else ''} (e.g. {', '.join(keys[:3])})"
    )


# --- shape helpers shared by the families' infer_config --------------------------------------------


def count_layers(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """How many `prefix{i}.` blocks the state dict holds (`visual.blocks.` -> depth)."""
    indices = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def heads_for(width: int) -> int:
    # the released models all use 64-wide heads (CLIP's and ViT-B's convention); shapes cannot tell
    return max(1, width // 64)


def video_shapes(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """VideoTowerConfig fields read from a SpaceTimeTransformer's tensors under `prefix`."""
    pos = state[f"{prefix}pos_embed"]  # [1, 1 + P, D]
    dim = pos.shape[2]
    patch = state[f"{prefix}patch_embed.proj.weight"].shape[-1]
    grid = round((pos.shape[1] - 1) ** 0.5)
    hidden = state[f"{prefix}blocks.0.mlp.fc1.weight"].shape[0]
    return {
        "img_size": grid * patch,
        "patch_size": patch,
        "embed_dim": dim,
        "depth": count_layers(state, f"{prefix}blocks."),
        "num_heads": heads_for(dim),
        "mlp_ratio": hidden / dim,
        "num_frames": state[f"{prefix}temporal_embed"].shape[1],
    }


def text_shapes(
    state: Mapping[str, torch.Tensor], kind: str, embedding: str, layers: str, mlp_in: str, positions: str
) -> dict[str, Any]:
    """TextTowerConfig fields read from a text tower's tensors: `embedding` the token embedding
    [vocab, width], `layers` the prefix of its numbered blocks, `mlp_in` the first block's MLP input
    weight [hidden, width] (key under `{layers}0.`), `positions` the position embedding [P, width]."""
    width = state[embedding].shape[1]
    return {
        "kind": kind,
        "dim": width,
        "n_layers": count_layers(state, layers),
        "n_heads": heads_for(width),
        "hidden_dim": state[f"{layers}0.{mlp_in}"].shape[0],
        "vocab_size": state[embedding].shape[0],
        "max_position_embeddings": state[positions].shape[0],
    }


def named_if_same(cfg: ModelConfig, fallback: str) -> ModelConfig:
    """`cfg` under the name of the packaged config with the same architecture, else `fallback`."""
    from egovlp.config import find_config, list_configs, load_config

    for name in list_configs("model"):
        try:
            packaged = load_config(find_config("model", name))
        except Exception:  # a broken packaged YAML must not stop a conversion
            continue
        if packaged.config_hash() == cfg.config_hash():
            return ModelConfig.from_dict({**cfg.to_dict(), "name": name})
    return ModelConfig.from_dict({**cfg.to_dict(), "name": fallback})

"""EgoVLP (Lin et al. 2022): our own key names, so the filter keeps every key (docs/checkpoints.md).

Published layout: `{state_dict: {module.video_model.*, module.text_model.* (DistilBERT),
module.txt_proj.*, module.vid_proj.*}, config: parse_config.ConfigParser, ...}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egovlp.config import ModelConfig, base_config
from egovlp.families import State

NAME = "egovlp"
TITLE = "EgoVLP"
# what the dual encoder does not use, in words
IGNORED = ("nothing",)

SENTINELS = (("video_model.temporal_embed", "text_model.transformer.layer.0.attention.q_lin.weight"),)


def filter_state_dict(state: State, cfg: ModelConfig) -> State:
    """Published EgoVLP keys are ours: a copy, nothing renamed or dropped (a stray key stays an
    error of the strict load)."""
    return dict(state)


def infer_config(state: State, args: Mapping[str, Any] | None = None) -> ModelConfig:
    # as before the families existed: a released EgoVLP file is the base architecture
    return base_config()

"""EgoVLPv2 (Pramanick et al. 2023) in dual-encoder mode (docs/checkpoints.md).

Published layout (`FrozenInTime` of the EgoVLPv2 repo): `{state_dict: {module.video_model.*,
module.text_model.* (RoBERTa), module.txt_proj.*, module.vid_proj.*, fusion and head keys},
config: parse_config.ConfigParser, ...}`. Facts from the published code:

- video: EgoVLP's SpaceTimeTransformer key names, LayerNorm eps 1e-5 (torch's default, where
  EgoVLP builds 1e-6), ImageNet mean/std; `temporal_embed` cut when longer, bilinear with
  aligned corners when shorter;
- text: RoBERTa, read as `last_hidden_state[:, 0]`; its pooler has no weights;
- projections `{vid,txt}_proj`: Linear (no bias) -> ReLU -> Linear -> ReLU -> Linear, 768 -> 4096;
- outputs are not L2-normalized; the trainer tokenizes with padding="max_length", max_length=15.

Dual-encoder mode encodes video and text apart, so the fusion weights are left out: the `*_i2t`
attention and `alpha_i2t` gates of the top video blocks, `crossattention_t2i` and `alpha_t2i` of
the top text layers, the top-level `cls_token` and `norm` (not those inside `video_model.*`), the
`cross_modal_*` transforms and poolers, and the ITM and MLM heads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from egovlp.config import ModelConfig
from egovlp.families import State, named_if_same, text_shapes, video_shapes

NAME = "egovlpv2"
TITLE = "EgoVLPv2"
# what the dual encoder does not use, in words
IGNORED = (
    "fusion layers (*_i2t, alpha_i2t, crossattention_t2i, alpha_t2i)",
    "top-level cls_token and norm",
    "cross_modal_* transforms and poolers",
    "ITM and MLM heads (itm_score, mlm_score)",
)

SENTINELS = (
    (
        "video_model.temporal_embed",
        "text_model.encoder.layer.0.attention.self.query.weight",
        "vid_proj.4.weight",
    ),
)

# keys the dual encoder never reads (fusion layers, the fused branch's own CLS/norm, ITM / MLM)
_FUSION = re.compile(
    r"(^video_model\.blocks\.\d+\.attn\.[a-z_]*i2t)"
    r"|(^text_model\.encoder\.layer\.\d+\.(crossattention_t2i\.|alpha_t2i$))"
    r"|(^(cls_token|norm\.weight|norm\.bias)$)"
    r"|(^(cross_modal_|itm_score\.|mlm_score\.))"
)
# buffers some transformers versions keep in the state dict
_BUFFERS = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")


def is_fusion_key(key: str) -> bool:
    return _FUSION.search(key) is not None


def filter_state_dict(state: State, cfg: ModelConfig) -> State:
    """Drop the fusion and head keys; every other published key is already ours."""
    return {k: v for k, v in state.items() if not is_fusion_key(k) and k not in _BUFFERS}


def infer_config(state: State, args: Mapping[str, Any] | None = None) -> ModelConfig:
    cfg = ModelConfig.from_dict(
        {
            "family": "egovlpv2",
            "projection": "mlp3",
            "projection_dim": state["vid_proj.4.weight"].shape[0],
            "video": {
                **video_shapes(state, "video_model."),
                "norm_eps": 1e-5,
                "temporal_fit": "interpolate_aligned",
            },
            "text": text_shapes(
                state,
                "roberta",
                embedding="text_model.embeddings.word_embeddings.weight",
                layers="text_model.encoder.layer.",
                mlp_in="intermediate.dense.weight",
                positions="text_model.embeddings.position_embeddings.weight",
            ),
        },
        "EgoVLPv2 checkpoint",
    )
    return named_if_same(cfg, "egovlpv2")

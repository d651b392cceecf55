"""LaViLa dual encoder (Zhao et al. 2023), TSF-B and TSF-L (docs/checkpoints.md).

Published layout (`CLIP_OPENAI_TIMESFORMER_{BASE,LARGE}`): `{state_dict: {module.visual.*,
module.transformer.resblocks.*, module.token_embedding.weight, module.positional_embedding,
module.ln_final.*, module.image_projection, module.text_projection, module.logit_scale},
args: argparse.Namespace, epoch, ...}`. Facts from the published code:

- video: the Frozen-in-Time SpaceTimeTransformer with `ln_pre` after the position embeddings,
  a bias-free patch convolution, QuickGELU MLPs, LayerNorm eps 1e-6 in the blocks; input B C T H W
  (we take B F 3 H W, as for every family); pixels normalized with its own constants (below);
- text: CLIP's causal transformer, read at the EOT token after `ln_final`;
- projections: plain matrices, `x @ P`;
- `temporal_embed` of another length: cut when longer, bilinear (no aligned corners) when shorter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egovlp.config import ModelConfig
from egovlp.families import State, named_if_same, text_shapes, video_shapes

# the published evaluation normalizes 0-255 pixels with mean (108.3272985, 116.7460125,
# 104.09373615) and std (68.5005327, 66.6321579, 70.32316305): CLIP's constants x 255 except the
# red mean (0.4248, not CLIP's 0.4815). Kept as published, divided by 255.
PIXEL_MEAN = (108.3272985 / 255, 116.7460125 / 255, 104.09373615 / 255)
PIXEL_STD = (68.5005327 / 255, 66.6321579 / 255, 70.32316305 / 255)

NAME = "lavila"
TITLE = "LaViLa"
# what the dual encoder does not use, in words
IGNORED = ("logit_scale (the training temperature)",)

SENTINELS = (
    ("visual.temporal_embed", "visual.ln_pre.weight", "image_projection", "token_embedding.weight"),
    ("video_model.temporal_embed", "text_model.token_embedding.weight"),  # a converted folder's
)

# the text tower's top-level keys in the published file -> ours under text_model.
_TEXT_KEYS = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.")
_RENAMES = {"image_projection": "vid_proj.weight", "text_projection": "txt_proj.weight"}
# the contrastive temperature: our trainers keep their own
_DROPPED = ("logit_scale",)


def filter_state_dict(state: State, cfg: ModelConfig) -> State:
    """Published LaViLa keys -> ours: `visual.` -> `video_model.`, the CLIP text tower under
    `text_model.`, the projection matrices as `{vid,txt}_proj.weight`; `logit_scale` dropped."""
    if "video_model.temporal_embed" in state:
        return dict(state)  # already our layout (a converted folder without config.json)
    out: State = {}
    for key, value in state.items():
        if key in _DROPPED:
            continue
        if key in _RENAMES:
            out[_RENAMES[key]] = value
        elif key.startswith("visual."):
            out["video_model." + key.removeprefix("visual.")] = value
        elif key.startswith(_TEXT_KEYS):
            out["text_model." + key] = value
        else:
            out[key] = value  # unknown: the strict load names it
    return out


def infer_config(state: State, args: Mapping[str, Any] | None = None) -> ModelConfig:
    """The architecture from the tensors (published or our key names); `args` (the pickled
    training options) is not needed: every size fact is in a shape."""
    ours = "video_model.temporal_embed" in state
    video_prefix, text_prefix = ("video_model.", "text_model.") if ours else ("visual.", "")
    video_proj = state["vid_proj.weight" if ours else "image_projection"]  # [D, out]
    cfg = ModelConfig.from_dict(
        {
            "family": "lavila",
            "projection": "matrix",
            "projection_dim": video_proj.shape[1],
            "video": {
                **video_shapes(state, video_prefix),
                "ln_pre": True,
                "patch_bias": False,
                "act": "quick_gelu",
                "norm_eps": 1e-6,
                "temporal_fit": "interpolate",
                "pixel_mean": PIXEL_MEAN,
                "pixel_std": PIXEL_STD,
            },
            "text": text_shapes(
                state,
                "clip",
                embedding=f"{text_prefix}token_embedding.weight",
                layers=f"{text_prefix}transformer.resblocks.",
                mlp_in="mlp.c_fc.weight",
                positions=f"{text_prefix}positional_embedding",
            ),
        },
        "LaViLa checkpoint",
    )
    # a packaged name (lavila-tsf-b / -l) only when the shapes are that size: `args.model` alone
    # could name a size the tensors are not
    return named_if_same(cfg, "lavila")

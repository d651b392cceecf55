"""The three text towers and the two projection kinds the checkpoint families use (docs/checkpoints.md).

- DistilBERT (EgoVLP) and RoBERTa (EgoVLPv2): Hugging Face modules built from the config, never
  downloaded; both are read at the first token (`last_hidden_state[:, 0]`).
- CLIP's causal text transformer (LaViLa): module names equal the published keys
  (`transformer.resblocks.{i}.attn.in_proj_weight`, `ln_final`, ...), read at the EOT token, which
  is the highest id of each row.

`text_hidden(tower, kind, ids, mask) -> [B, L, dim]` and `pool_text(cfg, hidden, ids) -> [B, dim]` are
the one call for all three.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from egovlp.config import ModelConfig, TextTowerConfig
from egovlp.video_tower import QuickGELU

# --- CLIP's text transformer (LaViLa) ------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """`nn.MultiheadAttention`'s parameters (`in_proj_weight`, `in_proj_bias`, `out_proj`), run
    batch-first through one causal `scaled_dot_product_attention` call."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        assert dim % num_heads == 0, "dim must be divisible by num_heads"
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        H = self.num_heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(B, L, 3, H, D // H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, L, hd)
        return self.out_proj(out.transpose(1, 2).reshape(B, L, D))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden_dim: int) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(dim, num_heads)
        self.ln_1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(dim, hidden_dim))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden_dim, dim))
        self.ln_2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ClipTextTower(nn.Module):
    """Token ids `[B, L]` (L <= context length) -> `[B, L, dim]` after `ln_final`.

    Causal attention makes every position independent of the ones after it, so the padding after
    EOT never changes the pooled feature and no attention mask is needed.
    """

    def __init__(self, cfg: TextTowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.max_position_embeddings, cfg.dim))
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(
            ResidualAttentionBlock(cfg.dim, cfg.n_heads, cfg.hidden_dim) for _ in range(cfg.n_layers)
        )
        self.ln_final = nn.LayerNorm(cfg.dim)
        self.grad_checkpointing = False
        self.init_weights()

    def init_weights(self) -> None:
        # CLIP's initialisation (std scaled by width and depth)
        width, layers = self.cfg.dim, self.cfg.n_layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=width**-0.5 * (2 * layers) ** -0.5)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=width**-0.5 * (2 * layers) ** -0.5)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        L = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[:L]  # (B, L, D)
        for block in self.transformer.resblocks:
            if self.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.ln_final(x)

    @staticmethod
    def pool(hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        # the EOT token (49407) is the highest id in each row, as the published code reads it
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), input_ids.argmax(dim=-1)]


# --- Hugging Face towers -------------------------------------------------------------------------


def create_distilbert(cfg: TextTowerConfig) -> nn.Module:
    """A DistilBERT with the distilbert-base-uncased defaults, built from the config (no download)."""
    from transformers import DistilBertConfig, DistilBertModel

    hf_cfg = DistilBertConfig(
        vocab_size=cfg.vocab_size,
        dim=cfg.dim,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        hidden_dim=cfg.hidden_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        sinusoidal_pos_embds=False,
        attn_implementation="sdpa",
    )
    return DistilBertModel(hf_cfg)


# RoBERTa's fixed facts: <pad> is id 1 and positions start after it; one token type
ROBERTA_PAD_ID = 1


def create_roberta(cfg: TextTowerConfig) -> nn.Module:
    """A roberta-base-shaped encoder without the pooler (EgoVLPv2's checkpoint has no pooler weights)."""
    from transformers import RobertaConfig, RobertaModel

    hf_cfg = RobertaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.hidden_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=1,
        pad_token_id=ROBERTA_PAD_ID,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
        attn_implementation="sdpa",
    )
    return RobertaModel(hf_cfg, add_pooling_layer=False)


def create_text_tower(cfg: TextTowerConfig) -> nn.Module:
    if cfg.kind == "clip":
        return ClipTextTower(cfg)
    if cfg.kind == "roberta":
        return create_roberta(cfg)
    return create_distilbert(cfg)


def text_hidden(
    tower: nn.Module, cfg: TextTowerConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Token ids `[B, L]` -> last hidden states `[B, L, dim]`."""
    if cfg.kind == "clip":
        return tower(input_ids)
    return tower(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def pool_text(cfg: TextTowerConfig, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """`[B, L, dim]` -> `[B, dim]`: EOT for CLIP, the first token otherwise."""
    if cfg.kind == "clip":
        return ClipTextTower.pool(hidden, input_ids)
    return hidden[:, 0]


# --- projections ---------------------------------------------------------------------------------


class MatrixProjection(nn.Module):
    """LaViLa's `image_projection` / `text_projection`: a plain `[in, out]` matrix, `x @ P`."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        nn.init.normal_(self.weight, std=in_dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def _mlp3(in_dim: int, out_dim: int) -> nn.Sequential:
    # EgoVLPv2: Linear (no bias) -> ReLU -> Linear -> ReLU -> Linear, keys {0, 2, 4}
    return nn.Sequential(
        nn.Linear(in_dim, out_dim, bias=False),
        nn.ReLU(),
        nn.Linear(out_dim, out_dim),
        nn.ReLU(),
        nn.Linear(out_dim, out_dim),
    )


def create_projections(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """(txt_proj, vid_proj) for the config's projection kind."""
    text_in, video_in, out = cfg.text.dim, cfg.video.embed_dim, cfg.projection_dim
    if cfg.projection == "matrix":
        return MatrixProjection(text_in, out), MatrixProjection(video_in, out)
    if cfg.projection == "mlp3":
        return _mlp3(text_in, out), _mlp3(video_in, out)
    # EgoVLP: ReLU *before* the text projection, as published; the video projection is a bare Linear
    return nn.Sequential(nn.ReLU(), nn.Linear(text_in, out)), nn.Sequential(nn.Linear(video_in, out))

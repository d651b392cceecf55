"""EgoVLP: the Frozen-style dual encoder (video tower + DistilBERT text tower, 256-d joint space).

Attribute names (`video_model`, `text_model`, `txt_proj`, `vid_proj`) equal the published
checkpoint's, so its state dict loads after stripping the DDP `module.` prefix. The same class
holds the LaViLa and EgoVLPv2 dual encoders: `cfg.family` picks the text tower, the projections,
the tokenizer and the video tower's options (egovlp/families/, docs/checkpoints.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch
from torch import nn

from egovlp.config import ModelConfig
from egovlp.errors import InputError
from egovlp.precision import Precision, resolve_precision
from egovlp.text_towers import create_projections, create_text_tower, pool_text, text_hidden
from egovlp.tokenizer import TextTokenizer, create_tokenizer
from egovlp.video_tower import SpaceTimeTransformer

# clips longer than the stored temporal_embed are fitted to it when the family interpolates
MAX_INTERPOLATED_FRAMES = 64


class EgoVLP(nn.Module):
    def __init__(self, cfg: ModelConfig, tokenizer: TextTokenizer | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.video_model = SpaceTimeTransformer(cfg.video)
        # DistilBERT (EgoVLP), CLIP's text transformer (LaViLa) or RoBERTa (EgoVLPv2)
        self.text_model = create_text_tower(cfg.text)
        # EgoVLP: ReLU before the text Linear, a bare video Linear; LaViLa: matrices; v2: 3-layer MLPs
        self.txt_proj, self.vid_proj = create_projections(cfg)
        self._tokenizer = tokenizer
        # a converted folder's `tokenizer/` (RoBERTa); set by egovlp.checkpoint.load_model
        self.tokenizer_dir: str | os.PathLike | None = None
        # what the encode_* helpers run in; set_precision casts the weights once (docs/design.md D)
        self.precision = "fp32"

    # --- pieces used by training and extraction ------------------------------------------------

    @property
    def tokenizer(self) -> TextTokenizer:
        if self._tokenizer is None:
            self._tokenizer = create_tokenizer(self.cfg, self.tokenizer_dir)
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return self.video_model.cls_token.device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in self.tokenizer(list(texts)).items()}

    def text_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids `[B, L]` -> the text tower's last hidden states `[B, L, dim]`."""
        return text_hidden(self.text_model, self.cfg.text, input_ids, attention_mask)

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`[B, L]` ids -> `[B, projection_dim]` (CLS, or CLIP's EOT -> txt_proj), with gradients."""
        hidden = self.text_hidden(input_ids, attention_mask)
        return self.txt_proj(pool_text(self.cfg.text, hidden, input_ids))

    def embed_video(self, frames: torch.Tensor) -> torch.Tensor:
        """`[B, F, 3, H, W]` -> `[B, projection_dim]` (video CLS -> vid_proj), with gradients."""
        return self.vid_proj(self.video_model(frames))

    def forward(
        self, frames: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: (text embeddings, video embeddings), both `[B, projection_dim]`, raw."""
        return self.embed_text(input_ids, attention_mask), self.embed_video(frames)

    # --- the public inference API (docs/design.md A, contract) -------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.video_model.cls_token.dtype

    def set_precision(self, precision: Precision | str) -> EgoVLP:
        """Cast the weights once to `precision` (a `resolve_precision` result, or its name) for
        inference: bf16 / fp16 weights and activations, fp32 outputs. For training keep fp32 master
        weights and use `Precision.autocast()` instead."""
        if isinstance(precision, str):
            precision = resolve_precision(precision, self.device)
        self.to(precision.dtype)
        self.precision = precision.name
        return self

    def _inference(self) -> contextlib.AbstractContextManager:
        return torch.inference_mode()

    def check_frames(self, frames: torch.Tensor) -> None:
        v = self.cfg.video
        if not torch.is_tensor(frames) or frames.dim() != 5 or frames.shape[2] != 3:
            shape = tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__
            raise InputError(f"frames: expected a tensor [B, F, 3, H, W], got {shape}")
        if frames.shape[3] != v.img_size or frames.shape[4] != v.img_size:
            raise InputError(
                f"frames: expected {v.img_size}x{v.img_size} pixels, got {tuple(frames.shape[3:])}"
            )
        # EgoVLP stores a 16-frame (zero-padded) embedding; the interpolating families fit theirs
        most = v.num_frames if v.temporal_fit == "zeros" else max(v.num_frames, MAX_INTERPOLATED_FRAMES)
        if not 1 <= frames.shape[1] <= most:
            raise InputError(f"frames: expected 1..{most} frames per clip, got {frames.shape[1]}")

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalized frames `[B, F, 3, H, W]` -> `[B, 256]` float, NOT L2-normalized."""
        self.check_frames(frames)
        with self._inference():
            out = self.embed_video(frames.to(self.device, self.dtype))
        return out.float()

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """list[str] -> `[B, 256]` float (text CLS -> txt_proj), NOT L2-normalized."""
        texts = _check_texts(texts)
        if not texts:
            return torch.empty(0, self.cfg.projection_dim, device=self.device)
        with self._inference():
            tokens = self.tokenize(texts)
            out = self.embed_text(tokens["input_ids"], tokens["attention_mask"])
        return out.float()

    def encode_text_tokens(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """list[str] -> per text a `[L_i, 256]` tensor of projected token features, without [CLS]/[SEP]."""
        texts = _check_texts(texts)
        if not texts:
            return []
        with self._inference():
            tokens = self.tokenize(texts)
            hidden = self.text_hidden(tokens["input_ids"], tokens["attention_mask"])
            projected = self.txt_proj(hidden).float()  # (B, L, 256)
        lengths = tokens["attention_mask"].sum(1).tolist()
        return [projected[i, 1 : n - 1].clone() for i, n in enumerate(lengths)]

    def save_pretrained(self, directory: str) -> None:
        from egovlp.checkpoint import save_pretrained

        save_pretrained(self, directory)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InputError("texts: expected a list of strings, got a single string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"texts[{i}]: expected a string, got {type(t).__name__}")
    return texts


def create_model(config=None, device: str | torch.device = "cpu") -> EgoVLP:
    """A randomly initialised model in eval mode from a packaged name (`egovlp.list_models()`),
    a YAML path, a ModelConfig, or None (the base architecture)."""
    from egovlp.config import resolve_model_config

    return EgoVLP(resolve_model_config(config)).to(device).eval()

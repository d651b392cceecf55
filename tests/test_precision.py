"""One precision policy (egovlp.precision), bf16 inference against fp32, fused attention against the
written-out reference."""

from __future__ import annotations

import copy

import pytest
import torch

import egovlp
from egovlp.config import ModelConfig, TextTowerConfig, VideoTowerConfig
from egovlp.errors import InputError
from egovlp.precision import PRECISIONS, cpu_has_bf16_matmul, resolve_precision
from egovlp.video_tower import DividedAttention, manual_divided_attention


def test_vocabulary_and_refusals():
    assert PRECISIONS == ("auto", "fp32", "bf16", "fp16")
    assert resolve_precision("fp32", "cpu").name == "fp32"
    assert resolve_precision("bf16", "cpu").dtype is torch.bfloat16
    assert resolve_precision("bf16", "cpu").accelerate_name == "bf16"
    assert resolve_precision("fp32", "cpu").accelerate_name == "no"
    with pytest.raises(InputError, match="fp16: float16 is for CUDA only"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(InputError, match=r"--precision 'half': choose one of auto, fp32, bf16, fp16"):
        resolve_precision("half", "cpu")


@pytest.mark.parametrize(("engine", "expected"), [("1", "bf16"), ("0", "fp32")])
def test_auto_follows_the_cpu_matrix_engine(monkeypatch, engine, expected):
    monkeypatch.setenv("EGOVLP_CPU_BF16", engine)
    cpu_has_bf16_matmul.cache_clear()
    try:
        assert resolve_precision("auto", "cpu").name == expected
        assert resolve_precision(None, "cpu").name == expected
    finally:
        cpu_has_bf16_matmul.cache_clear()


def test_probe_reads_torch_when_not_overridden(monkeypatch):
    monkeypatch.delenv("EGOVLP_CPU_BF16")
    cpu_has_bf16_matmul.cache_clear()
    try:
        native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
        assert cpu_has_bf16_matmul() is native
    finally:
        cpu_has_bf16_matmul.cache_clear()


@pytest.mark.parametrize("mode", ["space", "time"])
def test_fused_attention_matches_the_written_out_reference(mode):
    torch.manual_seed(0)
    attn = DividedAttention(dim=64, num_heads=4).eval()
    frames, patches = 3, 5
    x = torch.randn(2, 1 + frames * patches, 64)
    with torch.no_grad():
        fused = attn(x, frames, mode)
        manual = manual_divided_attention(attn, x, frames, mode)
    assert (fused - manual).abs().max() <= 1e-5 * manual.abs().max()


def _cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


def test_bf16_weights_cast_once_track_fp32():
    # a small but deep model at 112 px: twelve layers like the base, fewer channels
    cfg = ModelConfig(
        video=VideoTowerConfig(img_size=112, embed_dim=192, depth=12, num_heads=3, num_frames=4),
        text=TextTowerConfig(dim=192, n_layers=6, n_heads=3, hidden_dim=768),
        projection_dim=256,
    )
    torch.manual_seed(0)
    fp32 = egovlp.create_model(cfg)
    bf16 = copy.deepcopy(fp32).set_precision("bf16")
    assert bf16.precision == "bf16" and bf16.dtype is torch.bfloat16
    assert all(p.dtype is torch.bfloat16 for p in bf16.parameters())  # cast once, not per call
    frames = torch.randn(3, 4, 3, 112, 112)
    v32, v16 = fp32.encode_video(frames), bf16.encode_video(frames)
    assert v16.dtype is torch.float32  # outputs stay float32 for every caller
    assert _cosine_min(v32, v16) >= 0.999
    texts = ["#C C opens the fridge", "#C C cuts a tomato with a knife", "#O a man walks"]
    assert _cosine_min(fp32.encode_text(texts), bf16.encode_text(texts)) >= 0.999
    tokens32, tokens16 = fp32.encode_text_tokens(texts), bf16.encode_text_tokens(texts)
    assert min(_cosine_min(a, b) for a, b in zip(tokens32, tokens16, strict=True)) >= 0.99

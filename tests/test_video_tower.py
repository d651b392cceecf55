"""The video tower against a straightforward reference of DESIGN.md B.1 written here."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F

from egovlp.config import VideoTowerConfig
from egovlp.video_tower import SpaceTimeTransformer, video_tower_state_from_vit


def reference_attention(attn, x: torch.Tensor, num_frames: int, mode: str) -> torch.Tensor:
    """Divided attention written the slow, obvious way: explicit groups, explicit softmax."""
    B, N, D = x.shape
    H = attn.num_heads
    hd = D // H
    P = (N - 1) // num_frames
    qkv = attn.qkv(x)
    q, k, v = qkv.split(D, dim=-1)

    def heads(t):  # (n, D) -> (H, n, hd)
        return t.view(-1, H, hd).transpose(0, 1)

    def softmax_attend(qi, ki, vi):
        w = (heads(qi) @ heads(ki).transpose(-1, -2)) * hd**-0.5
        return (w.softmax(-1) @ heads(vi)).transpose(0, 1).reshape(-1, D)

    out = torch.zeros_like(x)
    for b in range(B):
        out[b, 0] = softmax_attend(q[b, :1], k[b], v[b])[0]  # CLS sees every token
        for g in range(num_frames if mode == "space" else P):
            if mode == "space":
                idx = [1 + g * P + p for p in range(P)]
            else:
                idx = [1 + f * P + g for f in range(num_frames)]
            keys = [0, *idx]  # CLS key/value in every group
            out[b, idx] = softmax_attend(q[b, idx], k[b, keys], v[b, keys])
    return attn.proj(out)


def reference_tower(tower: SpaceTimeTransformer, frames: torch.Tensor) -> torch.Tensor:
    B, Fr = frames.shape[:2]
    P = tower.patches_per_frame
    x = tower.patch_embed(frames.flatten(0, 1)).reshape(B, Fr * P, -1).clone()
    for f in range(Fr):
        x[:, f * P : (f + 1) * P] += tower.pos_embed[0, 1:] + tower.temporal_embed[0, f]
    x = torch.cat([(tower.cls_token + tower.pos_embed[:, :1]).expand(B, -1, -1), x], 1)
    for blk in tower.blocks:
        t = reference_attention(blk.timeattn, blk.norm3(x), Fr, "time")
        s = reference_attention(blk.attn, blk.norm1(x + t), Fr, "space")
        x = x + s  # residual from x, not from x + t
        x = x + blk.mlp(blk.norm2(x))
    return tower.norm(x)


def small_tower(num_frames: int = 4) -> SpaceTimeTransformer:
    torch.manual_seed(0)
    cfg = VideoTowerConfig(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_frames=num_frames
    )
    return SpaceTimeTransformer(cfg).eval()


def test_divided_attention_matches_reference():
    tower = small_tower()
    x = torch.randn(2, 1 + 3 * 16, 32)
    with torch.no_grad():
        for mode in ("space", "time"):
            fast = tower.blocks[0].attn(x, 3, mode)
            slow = reference_attention(tower.blocks[0].attn, x, 3, mode)
            torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_tower_matches_reference_including_fewer_frames():
    tower = small_tower(num_frames=4)
    with torch.no_grad():
        for frames_in in (4, 2, 1):
            frames = torch.randn(2, frames_in, 3, 32, 32)
            torch.testing.assert_close(
                tower.forward_tokens(frames), reference_tower(tower, frames), rtol=1e-4, atol=1e-5
            )


def test_batched_equals_single():
    tower = small_tower()
    frames = torch.randn(3, 4, 3, 32, 32)
    with torch.no_grad():
        batched = tower(frames)
        single = torch.cat([tower(frames[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_every_parameter_gets_a_gradient():
    tower = small_tower().train()
    out = tower(torch.randn(2, 4, 3, 32, 32))
    (out * torch.randn_like(out)).sum().backward()  # a plain sum of a LayerNorm output has no gradient
    no_grad = [n for n, p in tower.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_gradient_checkpointing_same_output_and_grads():
    tower = small_tower().train()
    frames = torch.randn(2, 4, 3, 32, 32)
    tower(frames).square().sum().backward()
    plain = {n: p.grad.clone() for n, p in tower.named_parameters()}
    tower.zero_grad()
    tower.grad_checkpointing = True
    tower(frames).square().sum().backward()
    for n, p in tower.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], rtol=1e-5, atol=1e-6)


def test_too_many_frames_is_an_error():
    tower = small_tower(num_frames=2)
    try:
        tower(torch.randn(1, 3, 3, 32, 32))
    except ValueError as err:
        assert "temporal_embed" in str(err)
    else:
        raise AssertionError("3 frames on a 2-frame tower must fail")


def test_init_from_image_vit_reproduces_the_vit_on_one_frame():
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10
    ).eval()
    tower = small_tower()
    state = video_tower_state_from_vit(vit.state_dict(), tower)
    tower.load_state_dict(state)
    assert torch.count_nonzero(tower.temporal_embed) == 0
    assert torch.all(tower.blocks[1].timeattn.proj.weight == 1)
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = vit.forward_features(image)[:, 0]
        got = tower(image.unsqueeze(1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # with several identical frames the time attention is still a no-op at init
    assert F.cosine_similarity(tower(image.unsqueeze(1).repeat(1, 4, 1, 1, 1)), expected).min() > 0.9

"""SpaceTimeTransformer: the Frozen-in-Time / EgoVLP video tower (docs/design.md B.1).

Reads top to bottom: divided attention, block, tower, initialisation from an image ViT.
Module names equal the published checkpoint's keys (`blocks.{i}.timeattn.qkv`, ...), so loading
the released weights is a prefix strip.

Token layout everywhere: `[B, 1 + F*P, D]`, CLS first, then the patches frame-major
(all P patches of frame 0, then frame 1, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp, PatchEmbed, trunc_normal_
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from egovlp.config import VideoTowerConfig

# the constants callers normalize with (docs/design.md B.3; egovlp.transforms uses the same numbers)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DividedAttention(nn.Module):
    """Multi-head attention over groups of tokens, with the CLS token shared by every group.

    `mode="space"` groups the patches of one frame (P tokens), `mode="time"` groups one spatial
    position across frames (F tokens). Each group's queries attend to the group plus CLS; the CLS
    query attends to every token. All groups and heads go through one batched
    `scaled_dot_product_attention` call per kind; nothing loops over frames, patches or heads.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        assert dim % num_heads == 0, "dim must be divisible by num_heads"
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, num_frames: int, mode: str) -> torch.Tensor:
        B, N, D = x.shape
        H, hd, Fr = self.num_heads, self.head_dim, num_frames
        P = (N - 1) // Fr
        qkv = self.qkv(x).view(B, N, 3, H, hd)  # (B, N, 3, H, hd)
        q, k, v = qkv.unbind(2)  # each (B, N, H, hd), strided views

        # CLS query against every token: (B, H, 1, hd) x (B, H, N, hd)
        cls_out = F.scaled_dot_product_attention(
            q[:, :1].transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )  # (B, H, 1, hd)

        # patch tokens regrouped: space -> groups (B, F) of P tokens; time -> groups (B, P) of F tokens
        G, L = (Fr, P) if mode == "space" else (P, Fr)

        def grouped(t: torch.Tensor) -> torch.Tensor:
            t = t[:, 1:].view(B, Fr, P, H, hd)
            if mode == "space":
                return t.permute(0, 1, 3, 2, 4)  # (B, F, H, P, hd)
            return t.permute(0, 2, 3, 1, 4)  # (B, P, H, F, hd)

        def with_cls(t: torch.Tensor) -> torch.Tensor:
            # the CLS key/value repeated into every group, in front of the group's own tokens
            cls = t[:, :1].transpose(1, 2).unsqueeze(1).expand(B, G, H, 1, hd)
            return torch.cat([cls, grouped(t)], dim=3).view(B * G, H, 1 + L, hd)

        qg = grouped(q).reshape(B * G, H, L, hd)
        out = _grouped_attention(qg, with_cls(k), with_cls(v)).view(B, G, H, L, hd)

        out = (
            out.permute(0, 1, 3, 2, 4) if mode == "space" else out.permute(0, 3, 1, 2, 4)
        )  # (B, F, P, H, hd)
        cls_out = cls_out.transpose(1, 2)  # (B, 1, H, hd)
        if torch.is_grad_enabled():
            # training: a concatenation, whose backward is a cheap split
            merged = torch.cat([cls_out, out.reshape(B, Fr * P, H, hd)], dim=1)
        else:
            # inference: one write into the token layout (B, N, H, hd) instead of two copies
            merged = x.new_empty(B, N, H, hd)
            merged[:, :1] = cls_out
            merged[:, 1:].view(B, Fr, P, H, hd).copy_(out)
        return self.proj(merged.view(B, N, D))


def manual_divided_attention(
    attn: DividedAttention, x: torch.Tensor, num_frames: int, mode: str
) -> torch.Tensor:
    """The same attention written out with explicit softmax(QK^T / sqrt(d)) V, one kind of group at a
    time: the reference that the fused `DividedAttention.forward` is tested against (never used to
    run the model)."""
    B, N, D = x.shape
    H, hd, Fr = attn.num_heads, attn.head_dim, num_frames
    P = (N - 1) // Fr
    q, k, v = attn.qkv(x).view(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)  # each (B, H, N, hd)
    scale = hd**-0.5

    def attend(qq: torch.Tensor, kk: torch.Tensor, vv: torch.Tensor) -> torch.Tensor:
        weights = (qq @ kk.transpose(-2, -1) * scale).softmax(dim=-1)
        return weights @ vv

    cls_out = attend(q[:, :, :1], k, v)  # (B, H, 1, hd): the CLS query sees every token
    patches = [t[:, :, 1:].reshape(B, H, Fr, P, hd) for t in (q, k, v)]  # frame-major patches
    if mode == "time":
        patches = [t.transpose(2, 3) for t in patches]  # (B, H, P, F, hd): groups over frames
    qg, kg, vg = patches  # (B, H, G, L, hd)
    G = qg.shape[2]
    cls_k = k[:, :, :1].unsqueeze(2).expand(B, H, G, 1, hd)
    cls_v = v[:, :, :1].unsqueeze(2).expand(B, H, G, 1, hd)
    out = attend(qg, torch.cat([cls_k, kg], dim=3), torch.cat([cls_v, vg], dim=3))  # (B, H, G, L, hd)
    if mode == "time":
        out = out.transpose(2, 3)  # back to (B, H, F, P, hd)
    merged = torch.cat([cls_out, out.reshape(B, H, Fr * P, hd)], dim=2)  # (B, H, N, hd)
    return attn.proj(merged.transpose(1, 2).reshape(B, N, D))


# Many tiny groups (time attention: F+1 keys each) run faster through the plain matmul kernel
# than through the CPU flash kernel, which is tuned for long sequences.
_SHORT_SEQUENCE = 16


def _grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if q.device.type == "cpu" and k.shape[-2] <= _SHORT_SEQUENCE:
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation `x * sigmoid(1.702 x)`; LaViLa's towers are trained with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu": nn.GELU, "quick_gelu": QuickGELU}


class SpaceTimeBlock(nn.Module):
    """Divided space-time attention, time first.

    The space residual adds to the *input* x, not to x + time output: this is the published
    "frozen-in-time" attention style and the released weights depend on it.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = DividedAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.timeattn = DividedAttention(dim, num_heads)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        t = self.timeattn(self.norm3(x), num_frames, mode="time")
        s = self.attn(self.norm1(x + t), num_frames, mode="space")
        x = x + s
        return x + self.mlp(self.norm2(x))


class SpaceTimeTransformer(nn.Module):
    """Video tower: frames `[B, F, 3, H, W]` -> CLS features `[B, D]` (or all tokens)."""

    def __init__(self, cfg: VideoTowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_frames = cfg.num_frames
        self.patch_embed = PatchEmbed(
            cfg.img_size, cfg.patch_size, in_chans=3, embed_dim=D, bias=cfg.patch_bias
        )
        self.patches_per_frame = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patches_per_frame, D))
        self.temporal_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, D))
        # LaViLa (CLIP-initialised): a LayerNorm with torch's eps over every token before the blocks
        self.ln_pre = nn.LayerNorm(D) if cfg.ln_pre else nn.Identity()
        act = ACTIVATIONS[cfg.act]
        self.blocks = nn.ModuleList(
            SpaceTimeBlock(D, cfg.num_heads, cfg.mlp_ratio, act, cfg.norm_eps) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self._set_pixel_conversion(cfg)
        self.grad_checkpointing = False
        self.init_weights()

    def init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.temporal_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _set_pixel_conversion(self, cfg: VideoTowerConfig) -> None:
        # ImageNet-normalized input -> the tower's own normalization: one per-channel affine map,
        # x * scale + shift. Non-persistent buffers: they follow .to() but stay out of state_dict.
        if cfg.pixel_mean is None and cfg.pixel_std is None:
            self.pixel_scale = self.pixel_shift = None
            return
        mean_in, std_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        mean = torch.tensor(cfg.pixel_mean or IMAGENET_MEAN)
        std = torch.tensor(cfg.pixel_std or IMAGENET_STD)
        shape = (1, 1, 3, 1, 1)
        self.register_buffer("pixel_scale", (std_in / std).view(shape), persistent=False)
        self.register_buffer("pixel_shift", ((mean_in - mean) / std).view(shape), persistent=False)

    def forward_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """`[B, F, 3, H, W]` ImageNet-normalized -> normalized tokens `[B, 1 + F*P, D]` (CLS first)."""
        if self.pixel_scale is not None:
            frames = frames * self.pixel_scale + self.pixel_shift  # to the tower's own constants
        B, Fr, C, H, W = frames.shape
        if Fr > self.num_frames and self.cfg.temporal_fit == "zeros":
            # EgoVLP: the stored (already zero-padded) embedding is the limit; the interpolating
            # families fit theirs to longer clips below
            raise ValueError(f"clip has {Fr} frames; this model's temporal_embed holds {self.num_frames}")
        P, D = self.patches_per_frame, self.cfg.embed_dim
        x = self.patch_embed(frames.reshape(B * Fr, C, H, W))  # (B*F, P, D)
        x = x.reshape(B, Fr * P, D)
        # patch position: spatial embedding tiled over frames + temporal embedding repeated per patch
        temporal = fit_temporal_embed(self.temporal_embed, Fr, self.cfg.temporal_fit)  # (1, F, D)
        pos = self.pos_embed[:, 1:].unsqueeze(1) + temporal.unsqueeze(2)  # (1, F, P, D)
        x = x + pos.reshape(1, Fr * P, D)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)  # (B, 1, D)
        x = self.ln_pre(torch.cat([cls, x], dim=1))  # (B, 1 + F*P, D)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(blk, x, Fr, use_reentrant=False)
            else:
                x = blk(x, Fr)
        return self.norm(x)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(frames)[:, 0]  # (B, D)


def fit_temporal_embed(embed: torch.Tensor, num_frames: int, mode: str = "zeros") -> torch.Tensor:
    """`[1, T, D]` -> `[1, num_frames, D]` the way each family's published loader does it.

    Fewer frames: the first ones (every family). More: zero-pad ("zeros", EgoVLP), bilinear
    ("interpolate", LaViLa) or bilinear with aligned corners ("interpolate_aligned", EgoVLPv2).
    """
    have = embed.shape[1]
    if num_frames <= have:
        return embed[:, :num_frames]
    if mode == "zeros":
        return torch.cat([embed, embed.new_zeros(embed.shape[0], num_frames - have, embed.shape[2])], dim=1)
    aligned = mode == "interpolate_aligned"
    # as an image [1, 1, T, D] resized to (num_frames, D): the D axis is left as it is
    out = F.interpolate(
        embed.unsqueeze(0), (num_frames, embed.shape[2]), mode="bilinear", align_corners=aligned
    )
    return out.squeeze(0)


# --- initialisation from an image ViT (pretraining from scratch, docs/design.md B.1) ----------------


def video_tower_state_from_vit(vit_state: dict[str, torch.Tensor], tower: SpaceTimeTransformer) -> dict:
    """Map a timm-named image ViT state dict onto the video tower.

    ViT keys carry over 1:1; time attention starts as an identity-preserving no-op (qkv zero, proj
    weight one so the block first behaves like the image ViT), temporal_embed zero, norm3 default.
    A pos_embed of another grid size is resampled with timm's helper. Classifier heads are dropped.
    """
    from egovlp.checkpoint import fit_pos_embed

    target = tower.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in vit_state.items():
        key = key.removeprefix("module.")
        if key.startswith(("head.", "fc_norm.", "pre_logits.")) or key not in target:
            continue
        if key == "pos_embed":
            value = fit_pos_embed(value, target[key].shape[1] - 1)
        if value.shape != target[key].shape:
            raise ValueError(f"ViT key {key}: shape {tuple(value.shape)} != {tuple(target[key].shape)}")
        out[key] = value
    for name, value in target.items():
        if ".timeattn.qkv." in name:
            out[name] = torch.zeros_like(value)
        elif name.endswith(".timeattn.proj.weight"):
            out[name] = torch.ones_like(value)
        elif name.endswith(".timeattn.proj.bias"):
            out[name] = torch.zeros_like(value)
        elif name == "temporal_embed":
            out[name] = torch.zeros_like(value)
        elif ".norm3." in name:
            out[name] = torch.ones_like(value) if name.endswith("weight") else torch.zeros_like(value)
    missing = sorted(set(target) - set(out))
    if missing:
        raise ValueError(f"ViT state dict lacks keys for the video tower: {missing[:8]}")
    return out

"""EgoNCE (docs/design.md B.4) and InfoNCE as its `verb=noun=False` case."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def positive_mask(verb_tags: torch.Tensor | None, noun_tags: torch.Tensor | None, n: int) -> torch.Tensor:
    """`[N, N]` bool: clips sharing at least one verb and one noun (cosine of multi-hot vectors > 0),
    plus the diagonal. A None tag matrix drops that condition; both None gives the identity."""
    sim = torch.ones(n, n)
    device = next((t.device for t in (verb_tags, noun_tags) if t is not None), None)
    if device is not None:
        sim = sim.to(device)
    for tags in (verb_tags, noun_tags):
        if tags is not None:
            unit = F.normalize(tags.float(), dim=-1, eps=1e-8)  # an empty row stays all zeros
            sim = sim * (unit @ unit.T)
    if verb_tags is None and noun_tags is None:
        sim = torch.zeros_like(sim)
    return (sim + torch.eye(n, device=sim.device)) > 0


def loss_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype EgoNCE runs in for embeddings of these dtypes: their promotion, with half
    precision (and any non-float dtype) raised to float32."""
    dtype = dtypes[0]
    for other in dtypes[1:]:
        dtype = torch.promote_types(dtype, other)
    if not dtype.is_floating_point or torch.finfo(dtype).bits < 32:
        return torch.float32
    return dtype


def egonce(
    text_emb: torch.Tensor,
    video_emb: torch.Tensor,
    verb_tags: torch.Tensor | None,
    noun_tags: torch.Tensor | None,
    temperature: float = 0.05,
    *,
    verb: bool = True,
    noun: bool = True,
) -> torch.Tensor:
    """Action-aware symmetric contrastive loss.

    text_emb, video_emb: `[N, D]` raw embeddings (L2-normalized here, eps 1e-8).
    verb_tags `[N, V]`, noun_tags `[N, M]`: multi-hot. With x = cos(text, video) / T and P the
    positive mask, the loss is the mean over rows of -log(sum of softmax over the positives of the
    row) plus the same over columns. `verb=False` / `noun=False` ignore that tag; both False is
    plain InfoNCE (only the diagonal is positive).
    The loss is computed in the inputs' (promoted) dtype: float64 stays float64, float32 stays
    float32, and only half precision (float16, bfloat16) is upcast to float32.
    """
    if text_emb.shape != video_emb.shape or text_emb.dim() != 2:
        raise ValueError(
            f"egonce: text {tuple(text_emb.shape)} and video {tuple(video_emb.shape)} must be [N, D]"
        )
    n = text_emb.shape[0]
    dtype = loss_dtype(text_emb.dtype, video_emb.dtype)
    t = F.normalize(text_emb.to(dtype), dim=-1, eps=1e-8)
    v = F.normalize(video_emb.to(dtype), dim=-1, eps=1e-8)
    logits = t @ v.T / temperature  # (N text, N video)
    pos = positive_mask(verb_tags if verb else None, noun_tags if noun else None, n)
    neg_inf = torch.finfo(logits.dtype).min

    def directional(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        # log sum_{j in P_i} softmax_j(x_i) = logsumexp over positives - logsumexp over all
        return (x.masked_fill(~p, neg_inf).logsumexp(dim=1) - x.logsumexp(dim=1)).mean()

    return -directional(logits, pos) - directional(logits.T, pos.T)

"""`egovlp heads train grounding`: fit the text-to-mask head on an EgoMask split and its cached features."""

from __future__ import annotations

import argparse
import os
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from typing_extensions import Unpack

from egovlp.errors import InputError
from heads.common import RunContext, Training, TrainOptions, train_head
from heads.grounding.dataset import GroundingSample, load_samples
from heads.grounding.model import GroundingConfig, GroundingHead

TASK = "grounding"


def make_batch(
    samples: list[GroundingSample], clip_len: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """A random window of `clip_len` frames per sample -> grids [B, T, h, w, D], text [B, L, Dt], masks."""
    B = len(samples)
    T = min(clip_len, min(len(s.expression.frames) for s in samples))
    L = max(len(s.text) for s in samples)
    h, w, D = samples[0].grid.features.shape[1:]
    grids = torch.zeros(B, T, h, w, D)
    text = torch.zeros(B, L, samples[0].text.shape[-1])
    text_mask = torch.zeros(B, L, dtype=torch.bool)
    coverage, present = torch.zeros(B, T, h, w), torch.zeros(B, T)
    for i, s in enumerate(samples):
        n = len(s.expression.frames)
        start = int(torch.randint(0, n - T + 1, (1,), generator=generator))
        grids[i] = s.grid.features[start : start + T].float()
        text[i, : len(s.text)], text_mask[i, : len(s.text)] = s.text, True
        coverage[i] = s.coverage[start : start + T]
        present[i] = s.present[start : start + T].float()
    return {"grids": grids, "text": text, "text_mask": text_mask, "coverage": coverage, "present": present}


def grounding_loss(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg: GroundingConfig
) -> torch.Tensor:
    """Soft-target BCE on cell coverage (cells the object touches weighted up) + BCE on presence."""
    target = batch["coverage"]
    weight = 1.0 + cfg.positive_weight * (target > 0).float()
    cells = F.binary_cross_entropy_with_logits(out["cells"], target, weight=weight)
    presence = F.binary_cross_entropy_with_logits(out["presence"], batch["present"])
    return cells + cfg.presence_weight * presence


def _training(
    gt_dir: str, features: str, text_features: str, cfg: GroundingConfig, run: RunContext
) -> Training:
    samples = load_samples(gt_dir, features, text_features, with_targets=True)
    if not samples:
        raise InputError(f"{gt_dir}: no expressions")
    D, Dt = samples[0].grid.features.shape[-1], samples[0].text.shape[-1]
    model = GroundingHead(cfg, D, Dt)
    grids = {s.expression.video: s.grid.features for s in samples}
    model.grid_norm.fit(torch.cat([g.reshape(-1, D)[:: max(1, g.shape[0] // 16)] for g in grids.values()]))
    model.text_norm.fit(torch.cat([s.text for s in samples]))
    model = model.to(run.device)

    def loss_of(idx: list[int]) -> torch.Tensor:
        batch = make_batch([samples[i] for i in idx], cfg.clip_len, run.generator)
        batch = {k: v.to(run.device) for k, v in batch.items()}
        out = model(batch["grids"], batch["text"], batch["text_mask"])
        return grounding_loss(out, batch, cfg)

    videos = len({s.expression.video for s in samples})
    return Training(
        model,
        len(samples),
        loss_of,
        {"expressions": len(samples), "videos": videos},
        {"grid_dim": D, "text_dim": Dt},
    )


def train_grounding(
    gt_dir: str | os.PathLike,
    features: str | os.PathLike,
    text_features: str | os.PathLike,
    out_dir: str | os.PathLike,
    **options: Unpack[TrainOptions],
) -> dict[str, Any]:
    """Train on every expression of an EgoMask ground-truth folder; writes `{out_dir}/checkpoint.pt`."""
    prepare = partial(_training, str(gt_dir), str(features), str(text_features))
    return train_head(TASK, GroundingConfig, prepare, out_dir, **options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, help="EgoMask ground-truth folder (egomask/train)")
    parser.add_argument("--features", required=True, help="folder of {video}.h5 patch grids (preset vq2d)")
    parser.add_argument("--text-features", required=True, help="text preset output with --text-tokens")


def run(args: argparse.Namespace) -> dict[str, Any]:
    return train_grounding(args.gt, args.features, args.text_features, args.out, **args.options)

"""`egovlp heads train nlq`: fit the span localizer on an NLQ annotation file and cached features."""

from __future__ import annotations

import argparse
import os
from functools import partial
from typing import Any

import torch
from typing_extensions import Unpack

from egovlp.errors import InputError
from heads.common import RunContext, Training, TrainOptions, train_head
from heads.nlq.dataset import collate, load_nlq_samples
from heads.nlq.model import NLQConfig, SpanLocalizer, span_loss

TASK = "nlq"


def _training(
    annotations: str | os.PathLike,
    features: str | os.PathLike,
    text_features: str | os.PathLike,
    cfg: NLQConfig,
    run: RunContext,
) -> Training:
    samples, _ = load_nlq_samples(annotations, features, text_features, cfg, require_windows=True)
    if not samples:
        raise InputError(f"{annotations}: no language queries with text to train on")
    video_dim, text_dim = samples[0].video.shape[1], samples[0].text.shape[1]
    model = SpanLocalizer(cfg, video_dim, text_dim)
    clips = {s.clip_uid: s.video for s in samples}
    model.video_norm.fit(torch.cat(list(clips.values())))
    model.text_norm.fit(torch.cat([s.text for s in samples]))
    model = model.to(run.device)

    def loss_of(idx: list[int]) -> torch.Tensor:
        batch = {k: v.to(run.device) for k, v in collate([samples[i] for i in idx], cfg, True).items()}
        logits = model(batch["video"], batch["video_mask"], batch["text"], batch["text_mask"])
        return span_loss(
            logits,
            batch["start"],
            batch["end"],
            batch["highlight"],
            batch["video_mask"],
            cfg.highlight_weight,
        )["loss"]

    meta = {"video_dim": video_dim, "text_dim": text_dim}
    return Training(model, len(samples), loss_of, {"samples": len(samples)}, meta)


def train_nlq(
    annotations: str | os.PathLike,
    features: str | os.PathLike,
    text_features: str | os.PathLike,
    out_dir: str | os.PathLike,
    **options: Unpack[TrainOptions],
) -> dict[str, Any]:
    """Train on the queries with text into the run folder `out_dir` (heads.common: final/, checkpoints/,
    metrics.jsonl); returns {"task", "samples", "losses", "seconds", "precision", "config_file"}.
    Options as `heads.common.train_head`."""
    prepare = partial(_training, annotations, features, text_features)
    return train_head(TASK, NLQConfig, prepare, out_dir, **options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ann", required=True, help="NLQ annotation file (nlq_train.json)")
    parser.add_argument("--features", required=True, help="folder of {clip_uid}.pt|.npy (+ .json sidecars)")
    parser.add_argument("--text-features", required=True, help="text_cls.pt / text_tokens.pt or their folder")
    parser.add_argument(
        "--use-tokens",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read per-token text features (text_tokens.pt)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.options["overrides"]["use_tokens"] = args.use_tokens
    return train_nlq(args.ann, args.features, args.text_features, args.out, **args.options)

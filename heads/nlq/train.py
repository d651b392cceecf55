"""`egovlp heads train nlq`: fit the span localizer on an NLQ annotation file and cached features."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from egovlp.errors import InputError
from heads.common import (
    batches,
    load_config,
    make_optimizer,
    progress,
    resolve_device,
    save_checkpoint,
    seed_everything,
    write_json,
)
from heads.nlq.dataset import collate, load_nlq_samples
from heads.nlq.model import NLQConfig, SpanLocalizer, span_loss

logger = logging.getLogger(__name__)

TASK = "nlq"


def train_nlq(
    annotations: str | os.PathLike,
    features: str | os.PathLike,
    text_features: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train and write `{out_dir}/checkpoint.pt` + `config.json`; returns {"losses": [...], "seconds", ...}."""
    cfg = load_config(NLQConfig, config, overrides)
    generator = seed_everything(cfg.seed)
    dev = resolve_device(device)
    samples, _ = load_nlq_samples(annotations, features, text_features, cfg, require_windows=True)
    if not samples:
        raise InputError(f"{annotations}: no language queries with text to train on")
    video_dim, text_dim = samples[0].video.shape[1], samples[0].text.shape[1]
    model = SpanLocalizer(cfg, video_dim, text_dim)
    clips = {s.clip_uid: s.video for s in samples}
    model.video_norm.fit(torch.cat(list(clips.values())))
    model.text_norm.fit(torch.cat([s.text for s in samples]))
    model = model.to(dev)
    steps_per_epoch = -(-len(samples) // cfg.batch_size)
    opt, sched = make_optimizer(
        model, cfg.lr, cfg.weight_decay, cfg.epochs * steps_per_epoch, steps_per_epoch
    )
    losses: list[float] = []
    start = time.perf_counter()
    bar = progress(range(cfg.epochs), desc="train nlq", enable=show_progress)
    for _epoch in bar:
        model.train()
        total = 0.0
        for idx in batches(len(samples), cfg.batch_size, generator):
            batch = {k: v.to(dev) for k, v in collate([samples[i] for i in idx], cfg, True).items()}
            out = model(batch["video"], batch["video_mask"], batch["text"], batch["text_mask"])
            loss = span_loss(
                out,
                batch["start"],
                batch["end"],
                batch["highlight"],
                batch["video_mask"],
                cfg.highlight_weight,
            )
            opt.zero_grad(set_to_none=True)
            loss["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss["loss"].detach()) * len(idx)
        losses.append(total / len(samples))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        out_dir / "checkpoint.pt", TASK, model, cfg, video_dim=video_dim, text_dim=text_dim, losses=losses
    )
    summary = {
        "task": TASK,
        "samples": len(samples),
        "losses": losses,
        "seconds": time.perf_counter() - start,
    }
    write_json({"config": cfg.__dict__, **summary}, out_dir / "config.json")
    logger.info("nlq: %d queries, final loss %.4f, checkpoint %s", len(samples), losses[-1], out_dir)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ann", required=True, help="NLQ annotation file (nlq_train.json)")
    parser.add_argument("--features", required=True, help="folder of {clip_uid}.pt|.npy (+ .json sidecars)")
    parser.add_argument("--text-features", required=True, help="text_cls.pt / text_tokens.pt or their folder")
    parser.add_argument("--use-tokens", action=argparse.BooleanOptionalAction, default=None,
                        help="read per-token text features (text_tokens.pt)")  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {**args.overrides, "use_tokens": args.use_tokens}
    return train_nlq(
        args.ann,
        args.features,
        args.text_features,
        args.out,
        args.config,
        overrides,
        args.device,
        not args.quiet,
    )

"""`egovlp heads train mq`: fit the moment detector on an MQ annotation file and one or more feature sets."""

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
    feature_widths,
    load_config,
    make_optimizer,
    progress,
    resolve_device,
    save_checkpoint,
    seed_everything,
    write_json,
)
from heads.mq.dataset import class_counts, load_mq_samples, pad_batch, random_crop
from heads.mq.losses import detection_loss
from heads.mq.model import MomentDetector, MQConfig

logger = logging.getLogger(__name__)

TASK = "mq"


def train_mq(
    annotations: str | os.PathLike,
    feature_dirs: list[str],
    out_dir: str | os.PathLike,
    config: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train and write `{out_dir}/checkpoint.pt` + `config.json`; returns {"losses", "classes", "seconds"}."""
    cfg = load_config(MQConfig, config, overrides)
    if len(cfg.regression_ranges) != cfg.levels:
        raise InputError(
            f"regression_ranges has {len(cfg.regression_ranges)} entries for {cfg.levels} levels"
        )
    generator = seed_everything(cfg.seed)
    dev = resolve_device(device)
    counts = class_counts(annotations)
    if not counts:
        raise InputError(f"{annotations}: no primary moment labels to train on")
    classes = sorted(counts)
    samples = [s for s in load_mq_samples(annotations, feature_dirs, classes) if len(s.labels)]
    set_dims = feature_widths(feature_dirs, samples[0].clip_uid)
    model = MomentDetector(cfg, set_dims, len(classes))
    model.input_norm.fit(torch.cat([s.feats for s in samples]))
    model = model.to(dev)
    multiple = 2 ** (cfg.levels - 1)
    steps_per_epoch = -(-len(samples) // cfg.batch_size)
    opt, sched = make_optimizer(
        model, cfg.lr, cfg.weight_decay, cfg.epochs * steps_per_epoch, steps_per_epoch
    )
    losses: list[float] = []
    start = time.perf_counter()
    bar = progress(range(cfg.epochs), desc="train mq", enable=show_progress)
    for _epoch in bar:
        model.train()
        total = 0.0
        for idx in batches(len(samples), cfg.batch_size, generator):
            crops = [random_crop(samples[i], cfg.max_len, generator) for i in idx]
            feats, mask = pad_batch([c[0] for c in crops], multiple)
            levels = model(feats.to(dev), mask.to(dev))
            loss = detection_loss(model, levels, [c[1] for c in crops], [c[2] for c in crops], cfg)
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
        out_dir / "checkpoint.pt", TASK, model, cfg, classes=classes, set_dims=set_dims, losses=losses
    )
    summary = {"task": TASK, "clips": len(samples), "classes": classes, "losses": losses,
               "seconds": time.perf_counter() - start}  # fmt: skip
    write_json({"config": cfg.__dict__, **summary}, out_dir / "config.json")
    logger.info("mq: %d clips, %d classes, final loss %.4f", len(samples), len(classes), losses[-1])
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ann", required=True, help="moment-query annotation file (moments_train.json)")
    parser.add_argument("--features", required=True, nargs="+",
                        help="one or more feature folders ({clip_uid}.npy|.pt + .json), concatenated per row")  # fmt: skip
    parser.add_argument("--asl", action=argparse.BooleanOptionalAction, default=None,
                        help="action-sensitivity weighting of the losses (overrides the config)")  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {**args.overrides, "asl": args.asl}
    return train_mq(args.ann, args.features, args.out, args.config, overrides, args.device, not args.quiet)

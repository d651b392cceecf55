"""`egovlp heads train mq`: fit the moment detector on an MQ annotation file and one or more feature sets."""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from egovlp.config import load_config_file
from egovlp.errors import InputError
from heads.common import prepare_run, train_and_save
from heads.mq.dataset import class_counts, load_mq_samples, pad_batch, random_crop
from heads.mq.losses import detection_loss
from heads.mq.model import MomentDetector, MQConfig

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
    cfg = load_config_file(MQConfig, config, overrides or {})
    out, generator, dev = prepare_run(out_dir, cfg.seed, device)
    counts = class_counts(annotations)
    if not counts:
        raise InputError(f"{annotations}: no primary moment labels to train on")
    classes = sorted(counts)
    samples = [s for s in load_mq_samples(annotations, feature_dirs, classes) if len(s.labels)]
    set_dims = samples[0].set_dims
    model = MomentDetector(cfg, set_dims, len(classes))
    model.input_norm.fit(torch.cat([s.feats for s in samples]))
    model = model.to(dev)
    multiple = 2 ** (cfg.levels - 1)

    def loss_of(idx: list[int]) -> torch.Tensor:
        crops = [random_crop(samples[i], cfg.max_len, generator) for i in idx]
        feats, mask = pad_batch([c[0] for c in crops], multiple)
        levels = model(feats.to(dev), mask.to(dev))
        return detection_loss(model, levels, [c[1] for c in crops], [c[2] for c in crops], cfg)["loss"]

    counts_ = {"clips": len(samples), "classes": classes}
    return train_and_save(TASK, model, cfg, len(samples), loss_of, generator, out, counts_,
                          {"classes": classes, "set_dims": set_dims}, show_progress)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ann", required=True, help="moment-query annotation file (moments_train.json)")
    parser.add_argument("--features", required=True, nargs="+",
                        help="one or more feature folders ({clip_uid}.npy|.pt + .json), concatenated per row")  # fmt: skip
    parser.add_argument("--asl", action=argparse.BooleanOptionalAction, default=None,
                        help="action-sensitivity weighting of the losses (overrides the config)")  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {**args.overrides, "asl": args.asl}
    return train_mq(args.ann, args.features, args.out, args.config, overrides, args.device, not args.quiet)

"""`egovlp heads train mq`: fit the moment detector on an MQ annotation file and one or more feature sets."""

from __future__ import annotations

import argparse
import os
from functools import partial
from typing import Any

import torch
from typing_extensions import Unpack

from egovlp.errors import InputError
from heads.common import RunContext, Training, TrainOptions, train_head
from heads.mq.dataset import class_counts, load_mq_samples, pad_batch, random_crop
from heads.mq.losses import detection_loss
from heads.mq.model import MomentDetector, MQConfig

TASK = "mq"


def _training(
    annotations: str | os.PathLike,
    feature_dirs: list[str],
    cfg: MQConfig,
    run: RunContext,
) -> Training:
    counts = class_counts(annotations)
    if not counts:
        raise InputError(f"{annotations}: no primary moment labels to train on")
    classes = sorted(counts)
    samples = [s for s in load_mq_samples(annotations, feature_dirs, classes) if len(s.labels)]
    set_dims = samples[0].set_dims
    model = MomentDetector(cfg, set_dims, len(classes))
    model.input_norm.fit(torch.cat([s.feats for s in samples]))
    model = model.to(run.device)
    multiple = 2 ** (cfg.levels - 1)

    def loss_of(idx: list[int]) -> torch.Tensor:
        crops = [random_crop(samples[i], cfg.max_len, run.generator) for i in idx]
        feats, mask = pad_batch([c[0] for c in crops], multiple)
        levels = model(feats.to(run.device), mask.to(run.device))
        return detection_loss(model, levels, [c[1] for c in crops], [c[2] for c in crops], cfg)["loss"]

    meta = {"classes": classes, "set_dims": set_dims}
    return Training(model, len(samples), loss_of, {"clips": len(samples), "classes": classes}, meta)


def train_mq(
    annotations: str | os.PathLike,
    feature_dirs: list[str],
    out_dir: str | os.PathLike,
    **options: Unpack[TrainOptions],
) -> dict[str, Any]:
    """Train on the clips with primary labels into the run folder `out_dir` (heads.common: final/, checkpoints/,
    metrics.jsonl); returns {"task", "clips", "classes", "losses", "seconds", "precision", "config_file"}.
    Options as `heads.common.train_head`."""
    return train_head(TASK, MQConfig, partial(_training, annotations, feature_dirs), out_dir, **options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ann", required=True, help="moment-query annotation file (moments_train.json)")
    parser.add_argument(
        "--features",
        required=True,
        nargs="+",
        help="one or more feature folders ({clip_uid}.npy|.pt + .json), concatenated per row",
    )
    parser.add_argument(
        "--asl",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="action-sensitivity weighting of the losses (overrides the config)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.options["overrides"]["asl"] = args.asl
    return train_mq(args.ann, args.features, args.out, **args.options)

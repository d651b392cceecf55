"""`egovlp heads train vq2d`: fit the visual-query localizer on a VQ2D annotation file and HDF5 grids."""

from __future__ import annotations

import argparse
import os
from functools import partial
from typing import Any

import torch
from typing_extensions import Unpack

from egovlp.errors import InputError
from egovlp.validate import non_negative_int
from heads.common import RunContext, Training, TrainOptions, train_head
from heads.vq2d.anchors import anchor_labels, detection_loss, make_anchors
from heads.vq2d.dataset import VQSample, load_vq_samples, training_window
from heads.vq2d.model import VisualQueryLocalizer, VQ2DConfig

TASK = "vq2d"


def make_batch(
    samples: list[VQSample], windows: list, anchors: torch.Tensor, cfg: VQ2DConfig
) -> dict[str, torch.Tensor]:
    """Windows of rows -> frames [B, T, h, w, D], query [B, Q, D], mask [B, T], anchor labels [B, T, N],
    gt boxes [B, T, 4] (zeros on background frames)."""
    T = max(len(w) for w in windows)
    first = samples[0].clip.features
    B, (h, w, D) = len(samples), first.shape[1:]
    frames = torch.zeros(B, T, h, w, D)
    mask = torch.zeros(B, T, dtype=torch.bool)
    labels = torch.full((B, T, anchors.shape[0]), -1.0)  # padding frames: ignored
    boxes = torch.zeros(B, T, 4)
    for i, (s, rows) in enumerate(zip(samples, windows, strict=True)):
        frames[i, : len(rows)] = s.clip.features[torch.as_tensor(rows)].float()
        mask[i, : len(rows)] = True
        for t, r in enumerate(rows):
            box = s.targets.get(int(r))
            labels[i, t] = anchor_labels(anchors, box, cfg.pos_iou, cfg.neg_iou)
            if box is not None:
                boxes[i, t] = box
    query = torch.stack([s.query for s in samples])
    return {"frames": frames, "query": query, "mask": mask, "labels": labels, "boxes": boxes}


def batch_loss(
    outputs: list[dict[str, torch.Tensor]],
    batch: dict[str, torch.Tensor],
    anchors: torch.Tensor,
    cfg: VQ2DConfig,
) -> dict[str, torch.Tensor]:
    """Sum of the detection losses of every stage (deep supervision of the refinement stages)."""
    m = batch["mask"]
    total = {"loss": 0.0, "obj": 0.0, "box": 0.0}
    for out in outputs:
        part = detection_loss(
            out["logits"][m],
            out["deltas"][m],
            batch["labels"][m],
            batch["boxes"][m],
            anchors,
            cfg.neg_ratio,
            cfg.min_negatives,
            cfg.box_weight,
        )
        total = {k: total[k] + part[k] for k in total}
    return total


def _training(
    annotations: str | os.PathLike,
    features: str | os.PathLike,
    cfg: VQ2DConfig,
    run: RunContext,
) -> Training:
    _, samples = load_vq_samples(annotations, features, cfg.query_size, with_targets=True)
    samples = [s for s in samples if s.targets]
    if not samples:
        raise InputError(f"{annotations}: no valid query set whose response track frames are in {features}")
    _, h, w, D = samples[0].clip.features.shape
    anchors = make_anchors(h, w, cfg.anchor_scales, cfg.anchor_ratios)
    model = VisualQueryLocalizer(cfg, D)
    clips = {s.clip.clip_uid: s.clip.features for s in samples}
    model.input_norm.fit(torch.cat([f.reshape(-1, D)[:: max(1, f.shape[0] // 64)] for f in clips.values()]))
    model = model.to(run.device)

    def loss_of(idx: list[int]) -> torch.Tensor:
        chunk = [samples[i] for i in idx]
        windows = [training_window(s, cfg.clip_len, cfg.positive_window_prob, run.generator) for s in chunk]
        batch = {k: v.to(run.device) for k, v in make_batch(chunk, windows, anchors, cfg).items()}
        outputs = model(batch["frames"], batch["query"], batch["mask"])
        return batch_loss(outputs, batch, anchors.to(run.device), cfg)["loss"]

    return Training(model, len(samples), loss_of, {"query_sets": len(samples)}, {"feature_dim": D})


def train_vq2d(
    annotations: str | os.PathLike,
    features: str | os.PathLike,
    out_dir: str | os.PathLike,
    **options: Unpack[TrainOptions],
) -> dict[str, Any]:
    """Train on the valid query sets into the run folder `out_dir` (heads.common: final/, checkpoints/,
    metrics.jsonl); returns {"task", "query_sets", "losses", "seconds", "precision", "config_file"}.
    Options as `heads.common.train_head`."""
    return train_head(TASK, VQ2DConfig, partial(_training, annotations, features), out_dir, **options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ann", required=True, help="VQ2D annotation file (vq_train.json)")
    parser.add_argument("--features", required=True, help="folder of {clip_uid}.h5 frame grids (preset vq2d)")
    parser.add_argument(
        "--refine-stages", type=non_negative_int, help="PRVQL-style refinement stages (overrides the config)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.options["overrides"]["refine_stages"] = args.refine_stages
    return train_vq2d(args.ann, args.features, args.out, **args.options)

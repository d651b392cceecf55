"""`egovlp heads predict mq`: detections per clip in the Ego4D moment-queries format (docs/design.md C.3)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import numpy as np
import torch

from egovlp.errors import InputError
from heads.common import output_path, progress, write_output
from heads.model_folder import load_head, precision_for_device, predict_precision, run_model
from heads.mq.dataset import load_mq_samples, pad_batch
from heads.mq.model import MomentDetector, MQConfig
from heads.mq.nms import decode_levels, soft_nms

logger = logging.getLogger(__name__)

TASK = "mq"


def build_model(cfg: MQConfig, meta: dict[str, Any]) -> MomentDetector:
    return MomentDetector(cfg, meta["set_dims"], len(meta["classes"]))


def load_mq_model(checkpoint: str | os.PathLike, device: str = "cpu") -> tuple[MomentDetector, list[str]]:
    model, meta = load_head(checkpoint, TASK, MQConfig, build_model, device)
    return model, list(meta["classes"])


@torch.no_grad()
def predict_mq(
    checkpoint: str | os.PathLike,
    annotations: str | os.PathLike,
    feature_dirs: list[str],
    out: str | os.PathLike | None = None,
    device: str = "cpu",
    show_progress: bool = True,
    precision: str | None = None,
) -> dict[str, Any]:
    """Detect moments in every clip of `annotations` in `precision` (auto|fp32|bf16|fp16); writes `out`
    (atomic) when given, returns the dict."""
    out = output_path(out)
    model, classes = load_mq_model(checkpoint, device)
    prec = predict_precision(precision, model)
    cfg = model.cfg
    dev = next(model.parameters()).device
    samples = load_mq_samples(annotations, feature_dirs, classes)
    if samples[0].feats.shape[1] != sum(model.set_dims):
        raise InputError(
            f"{feature_dirs}: features have {samples[0].feats.shape[1]} channels, the checkpoint expects "
            f"{sum(model.set_dims)} ({'+'.join(map(str, model.set_dims))})"
        )
    results: dict[str, list[dict[str, Any]]] = {}
    for sample in progress(samples, desc="predict mq", enable=show_progress):
        feats, mask = pad_batch([sample.feats], 2 ** (cfg.levels - 1))
        levels = run_model(model, prec, feats.to(dev), mask.to(dev))
        one = [{k: v[0].cpu() for k, v in lv.items()} for lv in levels]
        segs, scores, labels = decode_levels(one, model.strides, cfg.pre_nms_threshold, cfg.pre_nms_topk)
        T = sample.feats.shape[0]
        segs = segs.clamp(0, T)
        keep = segs[:, 1] > segs[:, 0]
        segs, scores, labels = soft_nms(
            segs[keep],
            scores[keep],
            labels[keep],
            cfg.soft_nms_sigma,
            cfg.pre_nms_threshold,
            cfg.max_segments,
        )
        seconds = sample.rows_to_seconds(segs.numpy().astype(np.float64))
        results[sample.clip_uid] = [
            {
                "label": classes[int(lab)],
                "score": round(float(sc), 6),
                "segment": [round(float(a), 3), round(float(b), 3)],
            }
            for (a, b), sc, lab in zip(seconds, scores, labels, strict=True)
        ]
    prediction = {"version": "1.0", "challenge": "ego4d_moment_queries", "detect_results": results}
    if out is not None:
        write_output(prediction, out)
    logger.info("mq: %d clips, %d detections", len(results), sum(map(len, results.values())))
    return prediction


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ann", required=True, help="moment-query annotation file to predict (moments_val.json)"
    )
    parser.add_argument(
        "--features", required=True, nargs="+", help="the same feature folders as in training"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    pred = predict_mq(
        args.checkpoint, args.ann, args.features, args.out, args.device, not args.quiet, args.precision
    )
    precision = precision_for_device(args.precision, args.device).name
    return {"task": TASK, "clips": len(pred["detect_results"]), "out": str(args.out), "precision": precision}

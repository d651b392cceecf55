"""`egovlp heads predict nlq`: top-k windows per language query in the official prediction format (C.1)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import torch

from heads.common import output_path, progress, write_output
from heads.model_folder import load_head, precision_for_device, predict_precision, run_model
from heads.nlq.dataset import collate, load_nlq_samples
from heads.nlq.model import NLQConfig, SpanLocalizer, top_spans

logger = logging.getLogger(__name__)

TASK = "nlq"


def build_model(cfg: NLQConfig, meta: dict[str, Any]) -> SpanLocalizer:
    return SpanLocalizer(cfg, meta["video_dim"], meta["text_dim"])


def load_nlq_model(checkpoint: str | os.PathLike, device: str = "cpu") -> SpanLocalizer:
    return load_head(checkpoint, TASK, NLQConfig, build_model, device)[0]


@torch.no_grad()
def predict_nlq(
    checkpoint: str | os.PathLike,
    annotations: str | os.PathLike,
    features: str | os.PathLike,
    text_features: str | os.PathLike,
    out: str | os.PathLike | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    show_progress: bool = True,
    precision: str | None = None,
) -> dict[str, Any]:
    """Predict every query with text in `annotations` in `precision` (auto|fp32|bf16|fp16); writes
    `out` (atomic) when given, returns the dict."""
    out = output_path(out)
    model = load_nlq_model(checkpoint, device)
    prec = predict_precision(precision, model)
    cfg = model.cfg
    dev = next(model.parameters()).device
    samples, _ = load_nlq_samples(annotations, features, text_features, cfg, require_windows=False)
    results = []
    chunks = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    for chunk in progress(chunks, desc="predict nlq", enable=show_progress):
        batch = {k: v.to(dev) for k, v in collate(chunk, cfg, False).items()}
        logits = run_model(
            model, prec, batch["video"], batch["video_mask"], batch["text"], batch["text_mask"]
        )
        for i, s in enumerate(chunk):
            T = s.video.shape[0]
            spans = top_spans(
                logits["start"][i, :T].cpu(),
                logits["end"][i, :T].cpu(),
                cfg.top_k,
                cfg.nms_iou,
                cfg.max_span_rows,
            )
            windows = [[round(float(s.times[a, 0]), 3), round(float(s.times[b, 1]), 3)] for a, b, _ in spans]
            results.append(
                {
                    "clip_uid": s.clip_uid,
                    "annotation_uid": s.annotation_uid,
                    "query_idx": s.query_idx,
                    "predicted_times": windows,
                }
            )
    prediction = {"version": "1.0", "challenge": "ego4d_nlq_challenge", "results": results}
    if out is not None:
        write_output(prediction, out)
    logger.info("nlq: %d predictions (%s)", len(results), prec.name)
    return prediction


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ann", required=True, help="NLQ annotation file to predict (nlq_val.json)")
    parser.add_argument("--features", required=True, help="folder of {clip_uid}.pt|.npy (+ .json sidecars)")
    parser.add_argument("--text-features", required=True, help="text_cls.pt / text_tokens.pt or their folder")


def run(args: argparse.Namespace) -> dict[str, Any]:
    pred = predict_nlq(
        args.checkpoint,
        args.ann,
        args.features,
        args.text_features,
        args.out,
        args.device,
        show_progress=not args.quiet,
        precision=args.precision,
    )
    precision = precision_for_device(args.precision, args.device).name
    return {"task": TASK, "predictions": len(pred["results"]), "out": str(args.out), "precision": precision}

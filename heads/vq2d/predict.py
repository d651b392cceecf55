"""`egovlp heads predict vq2d`: one response track per valid query set, in the challenge format (C.4).

Inference runs the localizer over the search window in overlapping chunks, takes the per-frame score
(the best anchor's objectness), smooths it, detects peaks (local maxima reaching `peak_threshold` x the
maximum), keeps the most recent peak (the object's last appearance before the query frame), and grows the
response window from it while the score stays above `window_fraction` x the peak score. Each frame of the
window gets the box of its best anchor.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import numpy as np
import torch

from egovlp.formats.ego4d import read_json
from egovlp.precision import Precision
from heads.common import output_path, progress, write_output
from heads.model_folder import load_head, precision_for_device, predict_precision, run_model
from heads.vq2d.anchors import decode, make_anchors
from heads.vq2d.dataset import VQSample, load_vq_samples
from heads.vq2d.model import VisualQueryLocalizer, VQ2DConfig

logger = logging.getLogger(__name__)

TASK = "vq2d"


def find_peaks(scores: np.ndarray, threshold: float) -> list[int]:
    """Indices of local maxima (>= both neighbours, > the left one on plateaus) with score >= threshold."""
    peaks = []
    for t in range(len(scores)):
        left = scores[t - 1] if t > 0 else -np.inf
        right = scores[t + 1] if t + 1 < len(scores) else -np.inf
        if scores[t] >= threshold and scores[t] > left and scores[t] >= right:
            peaks.append(t)
    return peaks


def response_window(
    scores: np.ndarray, smooth: int, peak_threshold: float, fraction: float
) -> tuple[int, int, float]:
    """Score curve [S] -> (first, last, peak score) of the most recent peak's window (inclusive)."""
    if smooth > 1 and len(scores) > 1:
        kernel = np.ones(smooth) / smooth
        padded = np.pad(scores, (smooth // 2, smooth - 1 - smooth // 2), mode="edge")
        curve = np.convolve(padded, kernel, mode="valid")
    else:
        curve = scores.astype(np.float64)
    peaks = find_peaks(curve, peak_threshold * float(curve.max()))
    peak = peaks[-1] if peaks else int(curve.argmax())  # most recent peak
    floor = fraction * curve[peak]
    first = last = peak
    while first > 0 and curve[first - 1] >= floor:
        first -= 1
    while last + 1 < len(curve) and curve[last + 1] >= floor:
        last += 1
    return first, last, float(curve[peak])


def build_model(cfg: VQ2DConfig, meta: dict[str, Any]) -> VisualQueryLocalizer:
    return VisualQueryLocalizer(cfg, meta["feature_dim"])


def load_vq2d_model(checkpoint: str | os.PathLike, device: str = "cpu") -> VisualQueryLocalizer:
    return load_head(checkpoint, TASK, VQ2DConfig, build_model, device)[0]


@torch.no_grad()
def score_search_window(
    model: VisualQueryLocalizer, sample: VQSample, precision: Precision | None = None
) -> tuple[np.ndarray, torch.Tensor]:
    """Per-frame scores [S] and best boxes [S, 4] (normalized) over the search window, chunk by chunk,
    the model run in `precision` (None: fp32)."""
    cfg, dev = model.cfg, next(model.parameters()).device
    _, h, w, _ = sample.clip.features.shape
    anchors = make_anchors(h, w, cfg.anchor_scales, cfg.anchor_ratios).to(dev)
    rows = sample.search
    S, margin = len(rows), cfg.temporal_window // 2 * max(1, cfg.st_layers)
    length = max(cfg.infer_len, 2 * margin + 1)
    scores, boxes = np.zeros(S), torch.zeros(S, 4)
    start = 0
    while True:
        stop = min(S, start + length)
        frames = (
            sample.clip.features[torch.as_tensor(rows[start:stop])].float()[None].to(dev)
        )  # (1, T, h, w, D)
        mask = torch.ones(1, stop - start, dtype=torch.bool, device=dev)
        out = run_model(model, precision, frames, sample.query[None].to(dev), mask)[-1]
        prob = torch.sigmoid(out["logits"][0])  # (T, N)
        best = prob.argmax(1)  # (T,)
        t = torch.arange(stop - start, device=dev)
        frame_boxes = decode(out["deltas"][0, t, best], anchors[best]).clamp(0, 1)  # (T, 4)
        # frames within `margin` of an inner chunk edge lack temporal context: the next chunk owns them
        keep_from = 0 if start == 0 else margin
        keep_to = stop - start if stop == S else stop - start - margin
        scores[start + keep_from : start + keep_to] = prob[t, best][keep_from:keep_to].cpu().numpy()
        boxes[start + keep_from : start + keep_to] = frame_boxes[keep_from:keep_to].cpu()
        if stop == S:
            return scores, boxes
        start = stop - 2 * margin


def predict_vq2d(
    checkpoint: str | os.PathLike,
    annotations: str | os.PathLike,
    features: str | os.PathLike,
    out: str | os.PathLike | None = None,
    device: str = "cpu",
    show_progress: bool = True,
    precision: str | None = None,
) -> dict[str, Any]:
    """Predict every valid query set of `annotations` in `precision` (auto|fp32|bf16|fp16); writes `out`
    (atomic) when given, returns the dict."""
    out = output_path(out)
    model = load_vq2d_model(checkpoint, device)
    prec = predict_precision(precision, model)
    cfg = model.cfg
    clips, samples = load_vq_samples(annotations, features, cfg.query_size, with_targets=False)
    tracks: dict[tuple[str, int, str], dict[str, Any]] = {}
    for sample in progress(samples, desc="predict vq2d", enable=show_progress):
        scores, boxes = score_search_window(model, sample, prec)
        first, last, peak = response_window(scores, cfg.smooth, cfg.peak_threshold, cfg.window_fraction)
        pixels = sample.clip.to_pixels(boxes[first : last + 1], sample.ann_size)
        fnos = sample.clip.frame_numbers[sample.search[first : last + 1]]
        bboxes = [
            {
                "fno": int(f),
                "x1": round(float(b[0]), 2),
                "y1": round(float(b[1]), 2),
                "x2": round(float(b[2]), 2),
                "y2": round(float(b[3]), 2),
            }
            for f, b in zip(fnos, pixels, strict=True)
        ]
        qs = sample.query_set
        tracks[(sample.clip.clip_uid, qs.annotation_idx, qs.query_set_id)] = {
            "bboxes": bboxes,
            "score": round(peak, 6),
        }
    prediction = challenge_file(read_json(annotations), clips, tracks)
    if out is not None:
        write_output(prediction, out)
    logger.info("vq2d: %d query sets predicted", len(tracks))
    return prediction


def challenge_file(
    gt: dict, clips: list, tracks: dict[tuple[str, int, str], dict[str, Any]]
) -> dict[str, Any]:
    """Nest tracks in the ground truth's order: videos -> clips -> one entry per annotation -> query_sets.
    Invalid query sets get an empty track with score 0 (they are not scored)."""
    by_position = {(c.video_idx, c.clip_idx): c for c in clips}
    videos = []
    for vi, video in enumerate(gt.get("videos", [])):
        out_clips = []
        for ci, _clip in enumerate(video.get("clips", [])):
            clip = by_position[(vi, ci)]
            preds = [{"query_sets": {}} for _ in range(clip.num_annotations)]
            for qs in clip.query_sets:
                track = tracks.get(
                    (clip.clip_uid, qs.annotation_idx, qs.query_set_id), {"bboxes": [], "score": 0.0}
                )
                preds[qs.annotation_idx]["query_sets"][qs.query_set_id] = track
            out_clips.append({"clip_uid": clip.clip_uid, "predictions": preds})
        uid = video.get("video_uid") or (by_position[(vi, 0)].video_uid if out_clips else None)
        videos.append({"video_uid": uid, "clips": out_clips})
    return {
        "version": gt.get("version", "1.0"),
        "challenge": "ego4d_vq2d_challenge",
        "results": {"videos": videos},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ann", required=True, help="VQ2D annotation file to predict (vq_val.json)")
    parser.add_argument("--features", required=True, help="folder of {clip_uid}.h5 frame grids (preset vq2d)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    pred = predict_vq2d(
        args.checkpoint, args.ann, args.features, args.out, args.device, not args.quiet, args.precision
    )
    n = sum(len(c["predictions"]) for v in pred["results"]["videos"] for c in v["clips"])
    precision = precision_for_device(args.precision, args.device).name
    return {"task": TASK, "annotations": n, "out": str(args.out), "precision": precision}

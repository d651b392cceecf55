"""`egovlp heads predict grounding`: EgoMask-layout predictions (RLE masks) of a trained head.

Per expression and frame: present when the presence probability reaches `presence_threshold`; the
mask is the cell probabilities upsampled to pixels (bilinear between cell centres), kept where they
reach `mask_fraction` of the frame's peak, so a present object always gets a mask. Beside each
`{exp}-{obj}.json` goes `{exp}-{obj}_boxes.json` (frame -> [x1, y1, x2, y2] of the mask) for
detection-style scoring.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egovlp.io import write_json_atomic
from egovlp.metrics.egomask import mask_box, write_prediction
from egovlp.validate import output_dir
from heads.common import load_head, predict_precision, run_model
from heads.grounding.dataset import GroundingSample, load_samples
from heads.grounding.model import GroundingConfig, GroundingHead
from heads.grounding.train import TASK


def masks_from_cells(
    sample: GroundingSample,
    cells: np.ndarray,
    presence: np.ndarray,
    presence_threshold: float,
    fraction: float,
) -> dict[str, np.ndarray]:
    """cells [N, h, w] and presence [N] probabilities -> frame -> pixel mask, for the present frames."""
    out = {}
    for i, frame in enumerate(sample.expression.frames):
        if presence[i] < presence_threshold:
            continue
        pixels = sample.cells.upsample(cells[i])
        out[frame] = pixels >= fraction * pixels.max()
    return out


def write_masks(out: Path, sample: GroundingSample, masks: dict[str, np.ndarray]) -> None:
    path = write_prediction(out, sample.expression, masks)
    write_json_atomic({f: mask_box(m) for f, m in masks.items()}, path.with_name(path.stem + "_boxes.json"))


@torch.no_grad()
def predict_grounding(
    checkpoint: str | os.PathLike,
    gt_dir: str | os.PathLike,
    features: str | os.PathLike,
    text_features: str | os.PathLike,
    out: str | os.PathLike,
    device: str = "cpu",
    precision: str | None = None,
) -> dict[str, Any]:
    """Write `{out}/{subset}/{video}/{exp}/{exp}-{obj}.json` for every expression of `gt_dir`."""
    model, _ = load_head(
        checkpoint,
        TASK,
        GroundingConfig,
        lambda cfg, p: GroundingHead(cfg, p["grid_dim"], p["text_dim"]),
        device,
    )
    cfg = model.cfg
    out = output_dir(out, "--out")
    dev = next(model.parameters()).device
    prec = predict_precision(precision, model)
    samples = load_samples(gt_dir, features, text_features, with_targets=False)
    frames = 0
    for s in samples:
        n = len(s.expression.frames)
        grids = s.grid.features[:n].float()[None].to(dev)
        text = s.text[None].to(dev)
        res = run_model(model, prec, grids, text, torch.ones(1, len(s.text), dtype=torch.bool, device=dev))
        cells = torch.sigmoid(res["cells"][0]).cpu().numpy()
        presence = torch.sigmoid(res["presence"][0]).cpu().numpy()
        masks = masks_from_cells(s, cells, presence, cfg.presence_threshold, cfg.mask_fraction)
        write_masks(out, s, masks)
        frames += len(masks)
    return {
        "task": TASK,
        "expressions": len(samples),
        "predicted_frames": frames,
        "out": str(out),
        "precision": prec.name,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, help="EgoMask ground-truth folder to predict (egomask/val)")
    parser.add_argument("--features", required=True, help="folder of {video}.h5 patch grids (preset vq2d)")
    parser.add_argument("--text-features", required=True, help="text preset output with --text-tokens")


def run(args: argparse.Namespace) -> dict[str, Any]:
    return predict_grounding(
        args.checkpoint, args.gt, args.features, args.text_features, args.out, args.device
    )

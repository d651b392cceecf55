"""`egovlp finetune predict oscc|pnr`: a fine-tuned model over FHO clips -> C.7 predictions.

OSCC: `[{"unique_id", "state_change": bool}]` for every clip. PNR: `[{"unique_id", "pnr_frame"}]` for
every clip, the arg-max index mapped to a parent-video frame with the official mapping
`parent_start_frame + (parent_end_frame - parent_start_frame) / 16 * i` (not rounded).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import nullcontext

import torch

from egovlp.errors import InputError
from egovlp.formats.fho import pnr_index_to_frame, read_fho
from egovlp.io import write_json_atomic
from finetune.data import FHOClips, eval_loader
from finetune.model import load_classifier

log = logging.getLogger("finetune")


def predict(
    checkpoint: str | os.PathLike,
    ann: str | os.PathLike,
    videos: str | os.PathLike,
    out: str | os.PathLike | None,
    task: str | None = None,
    batch_size: int = 8,
    num_workers: int = 2,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> list[dict]:
    """Predictions for every clip of `ann` (written to `out` when given, atomically)."""
    from tqdm import tqdm

    model, config = load_classifier(checkpoint)
    if task is not None and task != config["task"]:
        raise InputError(f"{checkpoint}: this model was fine-tuned for {config['task']}, not {task}")
    task = config["task"]
    device = torch.device(device)
    clips = read_fho(ann)
    num_frames = int(config["num_frames"])
    dataset = FHOClips(clips, videos, task, num_frames, model.video_cfg.img_size, train=False, labels=False)
    model.to(device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    preds: list[dict] = [{} for _ in clips]
    bar = tqdm(total=len(clips), desc=f"predict {task}", file=sys.stderr, disable=not progress)
    with torch.inference_mode(), amp:
        for frames, _, index in eval_loader(dataset, batch_size, num_workers):
            best = model(frames.to(device)).float().argmax(-1).tolist()  # (B,)
            for i, k in zip(index.tolist(), best, strict=True):
                clip = clips[i]
                if task == "oscc":
                    preds[i] = {"unique_id": clip.unique_id, "state_change": bool(k == 1)}
                else:
                    frame = pnr_index_to_frame(clip.parent_start_frame, clip.parent_end_frame, k, num_frames)
                    preds[i] = {"unique_id": clip.unique_id, "pnr_frame": frame}
            bar.update(len(best))
    bar.close()
    if out is not None:
        write_json_atomic(preds, out, indent=1)
        log.info("wrote %d %s predictions to %s", len(preds), task, out)
    return preds

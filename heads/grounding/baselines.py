"""Grounding baselines, scored in the same table as the head (benchmarks/bench_grounding.py):

- `centre_box`: the training split's median box size, centred, on every frame (trivial);
- `oracle_centre_box`: the same box on the ground-truth frames only, so what is left is the "where"
  error alone (the "when" is given);
- `text_patch_similarity`: training-free; the expression's text embedding (the text preset's CLS)
  against each cell's patch token projected by the model's own video projection; the object is
  predicted on the half of the frames with the highest peak similarity, as the peak cell.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch

from egovlp.features import text_key
from egovlp.metrics.egomask import decode_rle, mask_box, read_annotation, read_ground_truth
from egovlp.metrics.io import Loc
from heads.grounding.dataset import ANNOTATION_UID, GroundingSample
from heads.grounding.predict import write_masks


def median_box_size(gt_dir: str | Path) -> tuple[float, float]:
    """Median (width, height) in pixels of the ground-truth masks' boxes of a split."""
    sizes = []
    for e in read_ground_truth(gt_dir):
        for f, v in read_annotation(gt_dir, e.video, e.obj_id).items():
            if v is not None and (box := mask_box(decode_rle(v, Loc(f)))) is not None:
                sizes.append((box[2] - box[0], box[3] - box[1]))
    return statistics.median(w for w, _ in sizes), statistics.median(h for _, h in sizes)


def _box_mask(shape: tuple[int, int], size: tuple[float, float]) -> np.ndarray:
    H, W = shape
    mask = np.zeros(shape, bool)
    x0, y0 = int(round((W - size[0]) / 2)), int(round((H - size[1]) / 2))
    mask[y0 : y0 + int(round(size[1])), x0 : x0 + int(round(size[0]))] = True
    return mask


def centre_box(samples: list[GroundingSample], size: tuple[float, float], out: Path, oracle: bool) -> None:
    for s in samples:
        shape = s.cells.cell.shape
        frames = s.expression.frames
        if oracle:
            frames = [f for f, p in zip(frames, s.present.tolist(), strict=True) if p]
        write_masks(out, s, {f: _box_mask(shape, size) for f in frames})


@torch.no_grad()
def text_patch_similarity(
    samples: list[GroundingSample], model, text_cls: dict[str, torch.Tensor], out: Path
) -> None:
    for s in samples:
        e = s.expression
        text = torch.nn.functional.normalize(
            text_cls[text_key(e.video, ANNOTATION_UID, int(e.exp_id))].float(), dim=0
        )
        cells = model.vid_proj(s.grid.features[: len(e.frames)].float())  # [N, h, w, 256]
        sim = torch.nn.functional.normalize(cells, dim=-1) @ text  # [N, h, w]
        peak = sim.flatten(1).max(1)
        chosen = peak.values >= peak.values.median()
        masks = {}
        for i, f in enumerate(e.frames):
            if chosen[i]:
                masks[f] = s.cells.cell == int(peak.indices[i])
        write_masks(out, s, masks)

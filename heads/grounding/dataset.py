"""Grounding samples: EgoMask ground truth + the vq2d preset's per-frame patch grids + the text preset's
token features, and the geometry between mask pixels and grid cells.

A video's grid file `{video}.h5` holds one row per 5 fps frame; EgoMask frame name `NNNNN` is row
NNNNN (egovlp.synth.egomask writes them so). The text key of expression `e` of video `v` is
`v/egomask_e` (the synthetic split's `expressions_nlq.json`). Cells and pixels meet through the
letterbox geometry of the grid file: model pixel = video pixel * scale + pad.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from egovlp.errors import InputError
from egovlp.features import text_key
from egovlp.metrics.egomask import Expression, decode_rle, read_annotation, read_ground_truth
from egovlp.metrics.io import Loc
from heads.vq2d.dataset import ClipGrid, load_clip_grid

ANNOTATION_UID = "egomask"


@dataclass
class CellMap:
    """Which grid cell each video pixel falls in (letterbox geometry), and each cell's pixel count."""

    cell: np.ndarray  # [H, W] int: flat cell index (-1 outside the grid)
    counts: np.ndarray  # [h * w] pixels per cell
    grid: tuple[int, int]
    coords: tuple[np.ndarray, np.ndarray]  # per pixel, the continuous cell coordinate (y [H], x [W])

    @classmethod
    def of(cls, clip: ClipGrid, h: int, w: int) -> CellMap:
        g = clip.geometry
        H, W = int(g["original_height"]), int(g["original_width"])
        cell_px = g["input_size"] / w  # model pixels per cell (square grid)
        xs = ((np.arange(W) + 0.5) * g["scale"] + g["pad_left"]) / cell_px
        ys = ((np.arange(H) + 0.5) * g["scale"] + g["pad_top"]) / cell_px
        cx, cy = np.clip(xs.astype(int), 0, w - 1), np.clip(ys.astype(int), 0, h - 1)
        cell = cy[:, None] * w + cx[None, :]
        counts = np.bincount(cell.reshape(-1), minlength=h * w).astype(np.float32)
        return cls(cell, np.maximum(counts, 1), (h, w), (ys - 0.5, xs - 0.5))

    def coverage(self, mask: np.ndarray | None) -> np.ndarray:
        """[h, w] share of each cell's pixels inside the mask (zeros for an absent object)."""
        h, w = self.grid
        if mask is None:
            return np.zeros((h, w), np.float32)
        inside = np.bincount(self.cell[mask], minlength=h * w).astype(np.float32)
        return (inside / self.counts).reshape(h, w)

    def upsample(self, cells: np.ndarray) -> np.ndarray:
        """[h, w] cell values -> [H, W] pixel values, bilinear between cell centres."""
        h, w = self.grid
        ys, xs = self.coords
        y0 = np.clip(np.floor(ys).astype(int), 0, h - 1)
        x0 = np.clip(np.floor(xs).astype(int), 0, w - 1)
        y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
        wy = np.clip(ys - y0, 0, 1)[:, None]
        wx = np.clip(xs - x0, 0, 1)[None, :]
        top = cells[y0][:, x0] * (1 - wx) + cells[y0][:, x1] * wx
        bottom = cells[y1][:, x0] * (1 - wx) + cells[y1][:, x1] * wx
        return top * (1 - wy) + bottom * wy


@dataclass
class GroundingSample:
    expression: Expression
    grid: ClipGrid  # features [N, h, w, D], one row per frame of expression.frames
    cells: CellMap
    text: torch.Tensor  # [L, Dt] token features
    coverage: torch.Tensor | None  # [N, h, w] targets (training), None at prediction
    present: torch.Tensor | None  # [N] bool


def load_text_tokens(folder: str | Path) -> dict[str, torch.Tensor]:
    path = Path(folder) / "text_tokens.pt"
    if not path.is_file():
        raise InputError(f"{folder}: no text_tokens.pt (run `egovlp extract --preset text --text-tokens`)")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_samples(
    gt_dir: str | Path, features: str | Path, text_features: str | Path, with_targets: bool
) -> list[GroundingSample]:
    """Every expression of the ground-truth folder with its video's grids and its text tokens."""
    tokens = load_text_tokens(text_features)
    grids: dict[str, tuple[ClipGrid, CellMap]] = {}
    masks: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    samples = []
    for e in read_ground_truth(gt_dir):
        if e.video not in grids:
            grid = load_clip_grid(features, e.video)
            if len(grid.frame_numbers) < len(e.frames):
                raise InputError(
                    f"{features}/{e.video}.h5: {len(grid.frame_numbers)} rows for {len(e.frames)} frames"
                )
            h, w = grid.features.shape[1:3]
            grids[e.video] = (grid, CellMap.of(grid, h, w))
        grid, cells = grids[e.video]
        key = text_key(e.video, ANNOTATION_UID, int(e.exp_id))
        if key not in tokens:
            raise InputError(f"{text_features}: no text tokens for {key!r}")
        coverage = present = None
        if with_targets:
            if (e.video, e.obj_id) not in masks:
                masks[(e.video, e.obj_id)] = _targets(gt_dir, e, cells)
            coverage, present = masks[(e.video, e.obj_id)]
        samples.append(GroundingSample(e, grid, cells, tokens[key].float(), coverage, present))
    return samples


def _targets(gt_dir: str | Path, e: Expression, cells: CellMap) -> tuple[torch.Tensor, torch.Tensor]:
    raw = read_annotation(gt_dir, e.video, e.obj_id)
    loc = Loc(str(Path(gt_dir) / "annotations" / e.video / f"{e.obj_id}.json"))
    cov, present = [], []
    for f in e.frames:
        value = raw.get(f)
        mask = decode_rle(value, loc.key(f)) if value is not None else None
        mask = mask if mask is not None and mask.any() else None
        cov.append(cells.coverage(mask))
        present.append(mask is not None)
    return torch.from_numpy(np.stack(cov)), torch.tensor(present)

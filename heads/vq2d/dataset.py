"""VQ2D samples from the extractor's per-clip HDF5 grids and a `vq_*.json` annotation file.

Each HDF5 holds `features [N, h, w, D]` (fp16), `frame_numbers [N]` (5 fps clip frame numbers) and the
letterbox geometry attrs (`original_width`, `original_height`, `scale`, `pad_left`, `pad_top`,
`input_size`): model pixel = video pixel * scale + pad. Annotation boxes are in the annotation's own
pixel frame (`visual_crop.original_width/height`), rescaled to the decoded video's size first. Boxes
are then normalized to [0, 1] over the model input.

The query is the visual crop RoI-aligned on the grid of its frame. When the crop's frame is not stored,
the nearest stored frame is used (logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import roi_align

from egovlp.errors import InputError
from egovlp.formats.ego4d import VQBox, VQClip, VQQuerySet, read_vq2d

logger = logging.getLogger(__name__)

GEOMETRY_KEYS = ("original_width", "original_height", "scale", "pad_left", "pad_top", "input_size")


@dataclass
class ClipGrid:
    clip_uid: str
    features: torch.Tensor  # [N, h, w, D] fp16
    frame_numbers: np.ndarray  # [N]
    geometry: dict[str, float]

    def row_of(self, frame_number: int) -> int:
        """Index of the stored frame closest to `frame_number`."""
        return int(np.abs(self.frame_numbers - frame_number).argmin())

    def to_norm(self, box: VQBox, ann_size: tuple[int, int] | None) -> torch.Tensor:
        """Annotation box (x, y, w, h pixels) -> (x1, y1, x2, y2) in [0, 1] model-input coordinates."""
        g = self.geometry
        rx = g["original_width"] / ann_size[0] if ann_size else 1.0
        ry = g["original_height"] / ann_size[1] if ann_size else 1.0
        x1, y1 = box.x * rx, box.y * ry
        x2, y2 = (box.x + box.width) * rx, (box.y + box.height) * ry
        s, side = g["scale"], g["input_size"]
        out = [
            (x1 * s + g["pad_left"]) / side,
            (y1 * s + g["pad_top"]) / side,
            (x2 * s + g["pad_left"]) / side,
            (y2 * s + g["pad_top"]) / side,
        ]
        return torch.tensor(out, dtype=torch.float32).clamp(0, 1)

    def to_pixels(self, boxes: torch.Tensor, ann_size: tuple[int, int] | None) -> np.ndarray:
        """[K, 4] normalized boxes -> [K, 4] (x1, y1, x2, y2) in the annotation's pixel frame, clipped."""
        g = self.geometry
        side, s = g["input_size"], g["scale"]
        b = boxes.detach().double().cpu().numpy() * side
        x = (b[:, [0, 2]] - g["pad_left"]) / s
        y = (b[:, [1, 3]] - g["pad_top"]) / s
        rx = ann_size[0] / g["original_width"] if ann_size else 1.0
        ry = ann_size[1] / g["original_height"] if ann_size else 1.0
        w, h = ann_size if ann_size else (g["original_width"], g["original_height"])
        x, y = np.clip(x * rx, 0, w), np.clip(y * ry, 0, h)
        return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


def load_clip_grid(folder: str | Path, clip_uid: str) -> ClipGrid:
    import h5py

    path = Path(folder) / f"{clip_uid}.h5"
    if not path.is_file():
        raise InputError(f"{folder}: no VQ2D features for clip {clip_uid!r} ({clip_uid}.h5)")
    try:
        with h5py.File(path, "r") as h5:
            if not h5.attrs.get("complete", True):
                raise InputError(
                    f"{path}: incomplete extraction (attrs complete=false); rerun `egovlp extract`"
                )
            feats = torch.from_numpy(np.asarray(h5["features"], dtype=np.float16))
            frames = np.asarray(h5["frame_numbers"], dtype=np.int64)
            missing = [k for k in GEOMETRY_KEYS if k not in h5.attrs]
            geometry = {k: float(h5.attrs[k]) for k in GEOMETRY_KEYS if k in h5.attrs}
    except (OSError, KeyError) as err:
        raise InputError(f"{path}: not a VQ2D feature file ({err})") from None
    if missing:
        raise InputError(f"{path}: missing geometry attrs {', '.join(missing)}")
    if feats.dim() != 4 or feats.shape[0] != len(frames) or len(frames) == 0:
        raise InputError(f"{path}: features {tuple(feats.shape)} do not match frame_numbers [{len(frames)}]")
    return ClipGrid(clip_uid, feats, frames, geometry)


@dataclass
class VQSample:
    clip: ClipGrid
    query_set: VQQuerySet
    ann_size: tuple[int, int] | None  # the annotation's pixel frame (visual_crop original size)
    query: torch.Tensor  # [Q, D] RoI-aligned crop tokens
    search: np.ndarray  # [S] feature rows of the search window (frame number < query_frame), in order
    targets: dict[int, torch.Tensor]  # feature row -> normalized gt box (training files)


def crop_tokens(clip: ClipGrid, box_norm: torch.Tensor, row: int, size: int) -> torch.Tensor:
    """RoI-align the crop box on one frame's grid -> [size * size, D]."""
    grid = clip.features[row].float().permute(2, 0, 1)[None]  # (1, D, h, w)
    h, w = grid.shape[-2:]
    roi = torch.cat([torch.zeros(1), box_norm * torch.tensor([w, h, w, h])])[None]  # (1, 5) grid units
    out = roi_align(grid, roi, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return out[0].flatten(1).T.contiguous()  # (size*size, D)


def load_vq_samples(
    annotations: str | Path, features: str | Path, query_size: int, with_targets: bool
) -> tuple[list[VQClip], list[VQSample]]:
    """Valid query sets of the file -> samples (clips are read once). Returns the parsed clips too."""
    clips = read_vq2d(annotations)
    grids: dict[str, ClipGrid] = {}
    samples: list[VQSample] = []
    for clip in clips:
        for qs in clip.query_sets:
            if not qs.is_valid:
                continue
            if clip.clip_uid not in grids:
                grids[clip.clip_uid] = load_clip_grid(features, clip.clip_uid)
            grid = grids[clip.clip_uid]
            crop = qs.visual_crop
            assert crop is not None and qs.query_frame is not None  # guaranteed for valid sets by read_vq2d
            size = (
                (crop.original_width, crop.original_height)
                if crop.original_width and crop.original_height
                else None
            )
            row = grid.row_of(crop.frame_number)
            if grid.frame_numbers[row] != crop.frame_number:
                logger.info(
                    "%s: crop frame %d not stored; pooled from frame %d",
                    clip.clip_uid,
                    crop.frame_number,
                    grid.frame_numbers[row],
                )
            query = crop_tokens(grid, grid.to_norm(crop, size), row, query_size)
            search = np.flatnonzero(grid.frame_numbers < qs.query_frame)
            if len(search) == 0:
                search = np.array([0])
            targets: dict[int, torch.Tensor] = {}
            if with_targets:
                for box in qs.response_track:
                    r = grid.row_of(box.frame_number)
                    if grid.frame_numbers[r] == box.frame_number:
                        targets[r] = grid.to_norm(box, size)
            samples.append(VQSample(grid, qs, size, query, search, targets))
    return clips, samples


def training_window(
    sample: VQSample, length: int, positive_prob: float, generator: torch.Generator
) -> np.ndarray:
    """Rows of one training window: overlapping the response track with probability `positive_prob`,
    else drawn uniformly over the search window (mostly background frames: the negatives that matter)."""
    S = len(sample.search)
    if S <= length:
        return sample.search
    track = [i for i, r in enumerate(sample.search) if int(r) in sample.targets]
    if track and float(torch.rand((), generator=generator)) < positive_prob:
        anchor = track[int(torch.randint(0, len(track), (1,), generator=generator))]
        lo, hi = max(0, anchor - length + 1), min(anchor, S - length)
        start = int(torch.randint(lo, hi + 1, (1,), generator=generator))
    else:
        start = int(torch.randint(0, S - length + 1, (1,), generator=generator))
    return sample.search[start : start + length]

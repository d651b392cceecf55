"""Which frames feed which feature row: the sampling grids of DESIGN.md B.6, as pure functions.

NLQ/MQ default (exact 1.875 rows/s): the clip is put on a 30 fps grid (`clip_frames = round(duration
* 30)`); row k covers grid frames [16k, 16k + 16) and its 4 input frames follow the published
in-interval rule `(lo + hi) // 2` over each quarter [lo, hi] = [16k + 4q, 16k + 4q + 3], i.e. grid
frame 16k + 4q + 1 (q = 0..3); T = ceil(clip_frames / 16); positions past the clip's last frame clamp
to it (a clip shorter than one window still gives one row). Grid position p maps to the file frame
shown at the centre of p, `floor((start + (p + 0.5) / 30) * fps)`, which is `start * 30 + p` for a
30 fps file whose clip start lies on a frame boundary.

Compat (`--compat`, the published reader): for the clip [s, e] seconds of a source with `vlen`
frames, n = (e - s) * 1.87 * 4; boundaries b = linspace(max(0, 30 s), min(vlen, 30 e), int(n + 1) + 1)
truncated to int; frame i = (b[i] + b[i + 1] - 1) // 2; F = int(n + 1) frames, grouped in fours:
T = F // 4 rows, all computed. The published reader indexes a 30 fps file; a source at another rate
is read through the same 30 fps grid (vlen counted on that grid, positions mapped by time as above).

VQ2D: 5 fps clip frame n is grid frame 6n (Ego4D's convention), mapped to the file the same way;
N = ceil(clip_frames / 6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from egovlp.errors import VideoReadError
from egovlp.timebase import GRID_FPS, ROWS_PER_SECOND, VQ_FPS, WINDOW_FRAMES

FRAMES_PER_ROW = 4
COMPAT_ROWS_PER_SECOND = 1.87  # the published reader's rate (B.6, --compat)
VQ_STEP = int(GRID_FPS / VQ_FPS)  # 30 fps frames per 5 fps frame


@dataclass(frozen=True)
class SamplePlan:
    """Frames of one output: `indices [T, F]` file frame indices, `row_times [T, 2]` clip-relative
    seconds of each row's window, and for VQ2D the 5 fps frame numbers `[T]`."""

    indices: np.ndarray
    row_times: np.ndarray
    rows_per_second: float
    frame_numbers: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return int(self.indices.shape[0])


def clip_grid_frames(duration: float) -> int:
    """Length of a clip on the 30 fps timeline (at least one frame)."""
    return max(1, round(duration * GRID_FPS))


def _grid_to_file(pos: np.ndarray, fps: float, first: int, last: int) -> np.ndarray:
    """Absolute 30 fps grid positions -> the file frame shown at each position's centre, clamped."""
    if fps == GRID_FPS:
        return np.clip(pos.astype(np.int64), first, last)  # the published reader: grid frame = file frame
    # the small epsilon keeps an exact frame boundary (t * fps integral up to rounding) on its frame
    idx = np.floor((pos + 0.5) / GRID_FPS * fps + 1e-6).astype(np.int64)
    return np.clip(idx, first, last)


def _check(duration: float, fps: float, num_frames: int) -> None:
    if duration <= 0 or fps <= 0 or num_frames <= 0:
        raise ValueError(f"need positive duration, fps and frame count, got {duration}, {fps}, {num_frames}")


def _clip_bounds(start: float, duration: float, fps: float, num_frames: int) -> tuple[int, int]:
    """First and last file frame of the clip [start, start + duration), clamped to the file."""
    first = min(max(math.floor(start * fps + 1e-6), 0), num_frames - 1)
    last = math.ceil((start + duration) * fps - 1e-6) - 1
    return first, min(max(last, first), num_frames - 1)


def window_plan(start: float, duration: float, fps: float, num_frames: int) -> SamplePlan:
    """Default NLQ/MQ rows of the clip [start, start + duration) (file seconds) of a file with
    `num_frames` frames at `fps`: 1.875 rows/s, frames 16k + 4q + 1 of the clip's 30 fps grid."""
    _check(duration, fps, num_frames)
    first, last = _clip_bounds(start, duration, fps, num_frames)
    clip_frames = clip_grid_frames(duration)
    T = math.ceil(clip_frames / WINDOW_FRAMES)
    lo = WINDOW_FRAMES * np.arange(T)[:, None] + FRAMES_PER_ROW * np.arange(FRAMES_PER_ROW)[None, :]
    pos = np.minimum((lo + lo + FRAMES_PER_ROW - 1) // 2, clip_frames - 1)  # [T, 4] = 16k + 4q + 1
    rel = (pos + 0.5) / GRID_FPS  # clip seconds at the centre of each grid position
    indices = np.clip(np.floor((start + rel) * fps + 1e-6).astype(np.int64), first, last)
    edges = np.arange(T + 1) * WINDOW_FRAMES / GRID_FPS
    times = np.stack([edges[:-1], np.minimum(edges[1:], duration)], 1)
    return SamplePlan(indices.astype(np.int64), np.round(times, 6), ROWS_PER_SECOND)


def compat_plan(start: float, end: float, fps: float, num_frames: int) -> SamplePlan:
    """`--compat`: the published reader's frames and rows for the clip [start, end] (file seconds).

    Raises VideoReadError when the clip is too short to give one row of 4 frames."""
    _check(end - start, fps, num_frames)
    vlen = num_frames if fps == GRID_FPS else round(num_frames / fps * GRID_FPS)  # frames on the 30 fps grid
    n = (end - start) * COMPAT_ROWS_PER_SECOND * FRAMES_PER_ROW
    num = int(n + 1)
    bounds = np.linspace(max(0, start * GRID_FPS), min(vlen, end * GRID_FPS), num + 1).astype(int)
    frames = (bounds[:-1] + bounds[1:] - 1) // 2  # [F] grid frames
    T = num // FRAMES_PER_ROW
    if T == 0:
        raise VideoReadError(
            f"clip of {end - start:.3f} s gives {num} frames, fewer than one --compat row of {FRAMES_PER_ROW}"
        )
    pos = frames[: T * FRAMES_PER_ROW].reshape(T, FRAMES_PER_ROW)
    first, last = _clip_bounds(0.0, num_frames / fps, fps, num_frames)
    indices = _grid_to_file(np.maximum(pos, 0), fps, first, last)
    edges = bounds[: T * FRAMES_PER_ROW + 1 : FRAMES_PER_ROW] / GRID_FPS - start  # [T + 1] clip seconds
    times = np.stack([np.maximum(edges[:-1], 0.0), edges[1:]], 1)
    return SamplePlan(indices.astype(np.int64), np.round(times, 6), COMPAT_ROWS_PER_SECOND)


def vq_plan(start: float, duration: float, fps: float, num_frames: int) -> SamplePlan:
    """VQ2D frames at 5 fps of the clip: one 1-frame row per 5 fps frame number."""
    _check(duration, fps, num_frames)
    first, last = _clip_bounds(start, duration, fps, num_frames)
    clip_frames = clip_grid_frames(duration)
    n = np.arange(math.ceil(clip_frames / VQ_STEP))
    pos = np.minimum(n * VQ_STEP, clip_frames - 1)
    rel = (pos + 0.5) / GRID_FPS
    indices = np.clip(np.floor((start + rel) * fps + 1e-6).astype(np.int64), first, last)[:, None]  # (N, 1)
    times = np.stack([n / VQ_FPS, np.minimum((n + 1) / VQ_FPS, duration)], 1)
    return SamplePlan(indices, np.round(times, 6), VQ_FPS, frame_numbers=n.astype(np.int64))

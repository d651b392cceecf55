"""Which frames feed which feature row: the sampling grids of DESIGN.md B.6, as pure functions.

NLQ/MQ (default, exact): the clip is put on a 30 fps timeline (`clip_frames = round(duration * 30)`);
row k covers the 30 fps frames [16k, 16k + 16) and its 4 input frames are the middles of the four
4-frame quarters, 30 fps frame 16k + 4q + 2 (q = 0..3); T = ceil(clip_frames / 16), so 1.875 rows
per second; positions past the clip's last frame are clamped to it (a clip shorter than one window
still gives one row). A 30 fps position p maps to a frame of the file by time: the file frame shown at
the centre of 30 fps frame p, `floor((start + (p + 0.5) / 30) * fps)`, which is exactly `start * 30 + p`
for a 30 fps file whose clip start lies on a frame boundary.

Compat (`--compat`, the published 1.87 rows/s): the grid is k / 1.87 seconds instead of 16k / 30;
row k covers [k / 1.87, (k + 1) / 1.87) and its 4 frames are at the middles of the window's quarters,
`t = (k + (q + 0.5) / 4) / 1.87`; T = ceil(duration * 1.87), so no trailing rows are left zero (the
original code allocated rows it never filled). Frames map to the file as above (the frame shown at t).

VQ2D: 5 fps clip frame n is 30 fps frame 6n (Ego4D's convention), mapped to the file the same way;
N = ceil(clip_frames / 6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GRID_FPS = 30.0
WINDOW_FRAMES = 16
FRAMES_PER_ROW = 4
ROWS_PER_SECOND = GRID_FPS / WINDOW_FRAMES  # 1.875
COMPAT_ROWS_PER_SECOND = 1.87
VQ_FPS = 5.0
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


def _to_file_frames(times: np.ndarray, fps: float, first: int, last: int) -> np.ndarray:
    """Absolute seconds -> index of the file frame shown at that time, clamped to [first, last]."""
    # the small epsilon keeps an exact frame boundary (t * fps integral up to rounding) on its frame
    idx = np.floor(times * fps + 1e-6).astype(np.int64)
    return np.clip(idx, first, last)


def _clip_bounds(start: float, duration: float, fps: float, num_frames: int) -> tuple[int, int]:
    """First and last file frame of the clip [start, start + duration), clamped to the file."""
    first = min(max(math.floor(start * fps + 1e-6), 0), num_frames - 1)
    last = math.ceil((start + duration) * fps - 1e-6) - 1
    return first, min(max(last, first), num_frames - 1)


def window_plan(
    start: float, duration: float, fps: float, num_frames: int, compat: bool = False
) -> SamplePlan:
    """NLQ/MQ rows of the clip [start, start + duration) (seconds in the file) of a file with
    `num_frames` frames at `fps`. See the module docstring for the two grids."""
    if duration <= 0 or fps <= 0 or num_frames <= 0:
        raise ValueError(f"need positive duration, fps and frame count, got {duration}, {fps}, {num_frames}")
    first, last = _clip_bounds(start, duration, fps, num_frames)
    quarters = np.arange(FRAMES_PER_ROW)
    if compat:
        rate = COMPAT_ROWS_PER_SECOND
        T = max(1, math.ceil(duration * rate - 1e-9))
        k = np.arange(T)[:, None]
        rel = (k + (quarters[None, :] + 0.5) / FRAMES_PER_ROW) / rate  # (T, 4) clip seconds
        rel = np.minimum(rel, duration)
        times = np.stack([np.arange(T) / rate, np.minimum((np.arange(T) + 1) / rate, duration)], 1)
    else:
        rate = ROWS_PER_SECOND
        clip_frames = clip_grid_frames(duration)
        T = math.ceil(clip_frames / WINDOW_FRAMES)
        k = np.arange(T)[:, None]
        pos = WINDOW_FRAMES * k + (FRAMES_PER_ROW * quarters[None, :] + 2)  # (T, 4) 30 fps positions
        pos = np.minimum(pos, clip_frames - 1)
        rel = (pos + 0.5) / GRID_FPS
        edges = np.arange(T + 1) * WINDOW_FRAMES / GRID_FPS
        times = np.stack([edges[:-1], np.minimum(edges[1:], duration)], 1)
    indices = _to_file_frames(start + rel, fps, first, last)  # (T, 4)
    return SamplePlan(indices, np.round(times, 6), rate)


def vq_plan(start: float, duration: float, fps: float, num_frames: int) -> SamplePlan:
    """VQ2D frames at 5 fps of the clip: one 1-frame row per 5 fps frame number."""
    if duration <= 0 or fps <= 0 or num_frames <= 0:
        raise ValueError(f"need positive duration, fps and frame count, got {duration}, {fps}, {num_frames}")
    first, last = _clip_bounds(start, duration, fps, num_frames)
    clip_frames = clip_grid_frames(duration)
    n = np.arange(math.ceil(clip_frames / VQ_STEP))
    pos = np.minimum(n * VQ_STEP, clip_frames - 1)
    indices = _to_file_frames(start + (pos + 0.5) / GRID_FPS, fps, first, last)[:, None]  # (N, 1)
    times = np.stack([n / VQ_FPS, np.minimum((n + 1) / VQ_FPS, duration)], 1)
    return SamplePlan(indices, np.round(times, 6), VQ_FPS, frame_numbers=n.astype(np.int64))

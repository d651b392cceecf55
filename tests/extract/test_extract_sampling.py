"""Row grids (1.875 rows/s exact, the published --compat reader, 5 fps VQ2D) against the formulas of
DESIGN.md B.6 written out independently here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from egovlp.errors import VideoReadError
from extract.sampling import compat_plan, vq_plan, window_plan


def default_frames(start: float, duration: float, fps: float, num_frames: int) -> list[list[int]]:
    """B.6 default, spelled out: grid frame 16k + 4q + 1 clamped to the clip, mapped to the file by time."""
    clip_frames = max(1, round(duration * 30))
    first = max(0, math.floor(start * fps + 1e-6))
    last = min(num_frames - 1, math.ceil((start + duration) * fps - 1e-6) - 1)
    rows = []
    for k in range(math.ceil(clip_frames / 16)):
        row = []
        for q in range(4):
            lo, hi = 16 * k + 4 * q, 16 * k + 4 * q + 3
            p = min((lo + hi) // 2, clip_frames - 1)
            row.append(min(max(math.floor((start + (p + 0.5) / 30) * fps + 1e-6), first), last))
        rows.append(row)
    return rows


def compat_frames(s: float, e: float, vlen: int) -> list[list[int]]:
    """The published reader for a 30 fps source, spelled out."""
    n = (e - s) * 1.87 * 4
    b = np.linspace(max(0, s * 30), min(vlen, e * 30), int(n + 1) + 1).astype(int)
    frames = [(int(b[i]) + int(b[i + 1]) - 1) // 2 for i in range(int(n + 1))]
    T = len(frames) // 4
    return [frames[4 * k : 4 * k + 4] for k in range(T)]


@pytest.mark.parametrize(
    ("start", "duration"),
    [(0.0, 0.2), (0.0, 0.5), (0.0, 5.0), (0.0, 10.0), (1.0, 2.0), (3.7, 30.0), (0.0, 487.3)],
)
def test_default_grid_30fps(start, duration):
    num_frames = math.ceil((start + duration) * 30) + 5
    plan = window_plan(start, duration, 30.0, num_frames)
    expected = default_frames(start, duration, 30.0, num_frames)
    assert plan.indices.tolist() == expected
    assert plan.num_rows == math.ceil(max(1, round(duration * 30)) / 16)
    assert plan.rows_per_second == 1.875
    assert plan.row_times[0, 0] == 0.0 and plan.row_times[-1, 1] == pytest.approx(duration, abs=1e-6)


def test_default_grid_first_rows_are_16k_4q_1():
    plan = window_plan(0.0, 10.0, 30.0, 300)
    assert plan.num_rows == 19  # ceil(300 / 16)
    assert plan.indices[0].tolist() == [1, 5, 9, 13]
    assert plan.indices[1].tolist() == [17, 21, 25, 29]
    assert plan.indices[18].tolist() == [289, 293, 297, 299]  # 301 clamps to the clip's last frame
    assert plan.row_times[1].tolist() == pytest.approx([16 / 30, 32 / 30])
    assert window_plan(0.0, 0.2, 30.0, 6).indices.tolist() == [[1, 5, 5, 5]]  # shorter than one window


@pytest.mark.parametrize(("fps", "duration"), [(25.0, 4.0), (25.0, 10.0), (24.0, 7.3), (60.0, 2.0)])
def test_default_grid_other_source_rates(fps, duration):
    num_frames = math.ceil(duration * fps)
    plan = window_plan(0.0, duration, fps, num_frames)
    assert plan.indices.tolist() == default_frames(0.0, duration, fps, num_frames)
    assert plan.num_rows == math.ceil(round(duration * 30) / 16)  # T depends on the duration, not the fps


@pytest.mark.parametrize(
    ("s", "e", "vlen"),
    [
        (0.0, 30.0, 900),
        (0.0, 0.5, 15),
        (0.0, 5.0, 150),
        (0.0, 100.0, 3000),
        (12.4, 91.7, 9000),
        (0.0, 487.3, 14619),
        (100.0, 130.0, 3500),
    ],  # the last clip runs past the file's end: the boundaries stop at vlen
)
def test_compat_is_the_published_reader(s, e, vlen):
    plan = compat_plan(s, e, 30.0, vlen)
    expected = compat_frames(s, e, vlen)
    assert plan.indices.tolist() == expected
    assert plan.num_rows == int((e - s) * 1.87 * 4 + 1) // 4
    assert plan.rows_per_second == 1.87


def test_compat_thirty_seconds_is_56_rows():
    assert compat_plan(0.0, 30.0, 30.0, 900).num_rows == 56  # the default grid gives 57
    assert window_plan(0.0, 30.0, 30.0, 900).num_rows == 57
    assert compat_plan(0.0, 100.0, 30.0, 3000).num_rows == 187  # int(749) // 4


def test_compat_clip_shorter_than_one_row_is_an_error():
    with pytest.raises(VideoReadError, match="fewer than one --compat row"):
        compat_plan(0.0, 0.3, 30.0, 9)  # n = 2.244: 3 frames, no row of 4
    assert compat_plan(0.0, 0.41, 30.0, 13).num_rows == 1  # n = 3.07: 4 frames


@pytest.mark.parametrize(("fps", "num_frames"), [(25.0, 100), (25.0, 250), (60.0, 600)])
def test_compat_other_source_rates_read_the_30fps_grid_by_time(fps, num_frames):
    e = num_frames / fps
    vlen = round(e * 30)  # the file's length on the 30 fps grid
    plan = compat_plan(0.0, e, fps, num_frames)
    grid = np.array(compat_frames(0.0, e, vlen))
    expected = np.clip(np.floor((grid + 0.5) / 30 * fps + 1e-6).astype(int), 0, num_frames - 1)
    assert plan.indices.tolist() == expected.tolist()


def test_vq_plan_five_fps():
    plan = vq_plan(1.0, 10.0, 30.0, 400)
    assert plan.num_rows == 50
    assert plan.frame_numbers.tolist() == list(range(50))
    assert plan.indices[:, 0].tolist() == [30 + 6 * n for n in range(50)]

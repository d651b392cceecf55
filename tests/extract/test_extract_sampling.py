"""Row grids (1.875 rows/s exact, 1.87 compat, 5 fps VQ2D) and the rank split, as pure functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from extract.inputs import WorkItem, split_by_rank
from extract.sampling import vq_plan, window_plan


def test_exact_grid_30fps_ten_seconds():
    plan = window_plan(0.0, 10.0, 30.0, 300)
    assert plan.num_rows == 19  # ceil(300 / 16)
    assert plan.indices[0].tolist() == [2, 6, 10, 14]
    assert plan.indices[1].tolist() == [18, 22, 26, 30]
    assert plan.indices[18].tolist() == [290, 294, 298, 299]  # 302 clamps to the clip's last frame
    assert plan.row_times[1].tolist() == pytest.approx([16 / 30, 32 / 30])
    assert plan.row_times[-1].tolist() == pytest.approx([288 / 30, 10.0])  # last window clamped to the clip
    assert plan.rows_per_second == 1.875


def test_exact_grid_applies_clip_start_and_clamps_to_clip():
    plan = window_plan(1.0, 2.0, 30.0, 1000)  # clip = file frames [30, 90)
    assert plan.num_rows == 4  # ceil(60 / 16)
    assert plan.indices[0].tolist() == [32, 36, 40, 44]
    assert plan.indices.max() == 89 and plan.indices.min() >= 30


def test_clip_shorter_than_one_window():
    plan = window_plan(0.0, 0.2, 30.0, 6)
    assert plan.num_rows == 1
    assert plan.indices.tolist() == [[2, 5, 5, 5]]
    assert plan.row_times.tolist() == [[0.0, 0.2]]


def test_non_30fps_source_is_resampled_to_the_30fps_grid():
    plan = window_plan(0.0, 10.0, 25.0, 250)
    assert plan.num_rows == 19  # T depends on the duration, not on the file's fps
    # 30 fps position p -> file frame shown at the centre of p: floor((p + 0.5) / 30 * 25)
    expected = [[math.floor((16 * k + 4 * q + 2.5) / 30 * 25) for q in range(4)] for k in range(19)]
    expected = np.minimum(expected, 249)
    assert plan.indices.tolist() == expected.tolist()


@pytest.mark.parametrize("duration", [0.3, 5.0, 10.0, 100.0, 487.3])
def test_compat_grid(duration):
    plan = window_plan(0.0, duration, 30.0, math.ceil(duration * 30), compat=True)
    assert plan.num_rows == max(1, math.ceil(duration * 1.87))
    assert plan.rows_per_second == 1.87
    # no zero rows: every row samples frames inside the clip, in time order
    assert plan.indices.min() >= 0 and plan.indices.max() <= math.ceil(duration * 30) - 1
    assert np.all(np.diff(plan.indices.reshape(-1)) >= 0)
    k = plan.num_rows // 2
    assert plan.row_times[k].tolist() == pytest.approx([k / 1.87, min((k + 1) / 1.87, duration)], abs=1e-5)


def test_exact_and_compat_row_counts_differ_on_long_clips():
    assert window_plan(0.0, 100.0, 30.0, 3000).num_rows == 188  # ceil(3000 / 16)
    assert window_plan(0.0, 100.0, 30.0, 3000, compat=True).num_rows == 187  # ceil(100 * 1.87)


def test_vq_plan_five_fps():
    plan = vq_plan(1.0, 10.0, 30.0, 400)
    assert plan.num_rows == 50
    assert plan.frame_numbers.tolist() == list(range(50))
    assert plan.indices[:, 0].tolist() == [30 + 6 * n for n in range(50)]


def test_rank_split_covers_every_input_once_longest_first():
    items = [WorkItem(f"v{i}", f"/x/v{i}.mp4", 0.0, float(d)) for i, d in enumerate([5, 50, 7, 30, 1, 22, 9])]
    parts = [split_by_rank(items, r, 3) for r in range(3)]
    names = sorted(it.name for part in parts for it in part)
    assert names == sorted(it.name for it in items)
    for part in parts:
        weights = [it.weight() for it in part]
        assert weights == sorted(weights, reverse=True)
    loads = [sum(it.weight() for it in part) for part in parts]
    assert max(loads) - min(loads) <= 50  # LPT: no rank holds more than the largest item over another
    assert parts[0][0].name == "v1"

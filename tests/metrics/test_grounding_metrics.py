"""EgoMask grounding metrics (DESIGN.md C.6) against hand-computed values, masks, boxes and RLE."""

from __future__ import annotations

import numpy as np
import pytest

from egovlp.errors import InputError
from egovlp.metrics import grounding_file_metrics, grounding_metrics
from egovlp.metrics.grounding import decode_rle
from egovlp.metrics.io import Loc


def _mask(*pixels: tuple[int, int], shape: tuple[int, int] = (2, 2)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for y, x in pixels:
        mask[y, x] = True
    return mask


def test_hand_computed_masks():
    gt = {0: _mask((0, 0), (0, 1)), 1: _mask((1, 1)), 2: None, 3: _mask()}  # 3: an all-false mask is empty
    pred = {
        0: _mask((0, 0), (1, 0)),  # IoU 1/3
        # frame 1 missed (not named): IoU 0
        2: _mask((1, 1)),  # object predicted on a background frame: IoU 0
        3: None,  # empty vs empty: IoU 1
    }
    out = grounding_metrics(gt, pred)
    assert out["T_recall"] == pytest.approx(50.0)  # ground-truth frames {0, 1}, predicted {0, 2}
    assert out["IoU_all"] == pytest.approx(100 * (1 / 3 + 0 + 0 + 1) / 4)
    assert out["IoU_gold"] == pytest.approx(100 * (1 / 3 + 0) / 2)
    assert out["IoU_gold_pred"] == pytest.approx(100 * (1 / 3) / 3)  # over frames {0, 1, 2}
    assert list(out) == ["T_recall", "IoU_all", "IoU_gold", "IoU_gold_pred"]


def test_boxes_and_nested_list_masks():
    gt = {"0": [0, 0, 10, 10], "1": [0, 0, 10, 10], "2": [[0, 1], [1, 1]]}
    pred = {"0": [5, 0, 15, 10], "1": [], "2": [[1, 1], [0, 0]]}  # 1/3, 0 (empty list), 1/4
    out = grounding_metrics(gt, pred)
    assert out["T_recall"] == pytest.approx(100 * 2 / 3)
    assert out["IoU_gold"] == pytest.approx(100 * (1 / 3 + 0 + 1 / 4) / 3)
    assert out["IoU_all"] == out["IoU_gold"] == out["IoU_gold_pred"]


def test_empty_versus_empty_is_one():
    out = grounding_metrics({0: None, 1: [0, 0, 0, 5]}, {})  # a zero-area box is empty too
    assert out == {"T_recall": 100.0, "IoU_all": 100.0, "IoU_gold": 100.0, "IoU_gold_pred": 100.0}
    out = grounding_metrics({0: None}, {0: [0, 0, 1, 1]})  # a prediction on background only
    assert (out["IoU_all"], out["IoU_gold"], out["IoU_gold_pred"]) == (0.0, 100.0, 0.0)


def test_rle_uncompressed_and_compressed_agree():
    # size 3x3, runs 1 off, 3 on, 4 off, 1 on (column-major); "134N" encodes the 4th run as a delta
    # of -2 from the 2nd (3 - 2 = 1), the sign in bit 0x10 of the last 5-bit group
    expected = np.zeros(9, dtype=bool)
    expected[1:4] = True
    expected[8] = True
    expected = expected.reshape(3, 3).T
    loc = Loc("test")
    assert (decode_rle({"size": [3, 3], "counts": [1, 3, 4, 1]}, loc) == expected).all()
    assert (decode_rle({"size": [3, 3], "counts": "134N"}, loc) == expected).all()
    # a run of 40 takes two groups ("X1"): 5x9 mask whose last column (pixels 40..44) is on
    long = decode_rle({"size": [5, 9], "counts": "X15"}, loc)
    assert long.shape == (5, 9) and long[:, 8].all() and long.sum() == 5


def test_bad_regions_are_rejected():
    with pytest.raises(InputError, match="box and the other a mask"):
        grounding_metrics({0: [0, 0, 1, 1]}, {0: _mask((0, 0))})
    with pytest.raises(InputError, match=r"mask shape \(3, 3\) differs"):
        grounding_metrics({0: _mask((0, 0))}, {0: _mask((0, 0), shape=(3, 3))})
    with pytest.raises(InputError, match="box corners out of order"):
        grounding_metrics({0: [5, 0, 1, 1]}, {})
    with pytest.raises(InputError, match="sum to height x width = 4"):
        grounding_metrics({0: {"size": [2, 2], "counts": [1, 2]}}, {})
    with pytest.raises(InputError, match="mask values must be 0/1"):
        grounding_metrics({0: [[0, 2], [1, 1]]}, {})
    with pytest.raises(InputError, match="no frames"):
        grounding_metrics({}, {})


def test_file_metrics_average_queries_and_validate():
    gt = {
        "queries": {
            "q1": {"text": "the red cup", "frames": {"0": [0, 0, 10, 10]}},
            "q2": {"frames": {"0": None}},
        }
    }
    pred = {"results": {"q1": {"frames": {"0": [0, 0, 10, 10]}}, "q2": {"frames": {"0": [0, 0, 1, 1]}}}}
    out = grounding_file_metrics(gt, pred)
    assert out["n_queries"] == 2
    assert out["IoU_all"] == pytest.approx(50.0)  # q1 100, q2 0
    assert out["IoU_gold"] == pytest.approx(100.0)  # q2 has no ground-truth frame: vacuous 100
    with pytest.raises(InputError, match=r"^p\.json: results: missing query 'q2'"):
        grounding_file_metrics(gt, {"results": {"q1": pred["results"]["q1"]}}, pred_name="p.json")
    with pytest.raises(InputError, match=r"^p\.json: results\.q3: no such query"):
        grounding_file_metrics(gt, {"results": {**pred["results"], "q3": {"frames": {}}}}, pred_name="p.json")
    bad = {"results": {"q1": {"frames": {"0": "box"}}, "q2": pred["results"]["q2"]}}
    with pytest.raises(
        InputError, match=r'^p\.json: results\.q1\.frames\["0"\]: expected a box \[x1, y1, x2, y2\]'
    ):
        grounding_file_metrics(gt, bad, pred_name="p.json")

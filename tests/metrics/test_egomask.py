"""EgoMask's layout and metrics (docs/design.md C.6, D): COCO RLE both ways, ground truth as predictions,
hand-computed masks (empty vs empty, background predictions, a missing prediction file) and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from egovlp.errors import InputError
from egovlp.metrics import egomask_metrics
from egovlp.metrics.egomask import (
    decode_rle,
    encode_rle,
    mask_box,
    read_ground_truth,
    rle_runs,
    runs_to_string,
    string_to_runs,
    write_ground_truth,
    write_prediction,
)
from egovlp.metrics.io import Loc

LOC = Loc("test")


def _mask(*pixels: tuple[int, int], shape: tuple[int, int] = (2, 2)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for y, x in pixels:
        mask[y, x] = True
    return mask


def test_rle_hand_computed_strings():
    # column-major pixels of [[0, 1], [1, 1]] are 0, 1, 1, 1: one 0 then three 1s
    assert rle_runs(np.array([[0, 1], [1, 1]], bool)) == [1, 3]
    assert encode_rle(np.array([[0, 1], [1, 1]], bool)) == {"size": [2, 2], "counts": "13"}
    assert rle_runs(np.array([[1, 0]], bool)) == [0, 1, 1]  # starts with a 1: an empty 0-run first
    # 40 needs two 5-bit groups (8 | more, then 1); runs after the second are deltas: 4 - 10 = -6
    assert runs_to_string([5, 40, 3]) == "5X13"
    assert runs_to_string([2, 10, 3, 4]) == "2:3J"
    assert string_to_runs("2:3J", LOC) == [2, 10, 3, 4]
    assert string_to_runs("5X13", LOC) == [5, 40, 3]


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 7), (48, 64), (120, 90)]:
        for density in (0.0, 0.05, 0.5, 1.0):
            mask = rng.random(shape) < density
            rle = encode_rle(mask)
            assert np.array_equal(decode_rle(rle, LOC), mask)
            assert np.array_equal(decode_rle({"size": list(shape), "counts": rle_runs(mask)}, LOC), mask)


def test_rle_errors_are_one_line():
    with pytest.raises(InputError, match="sum to height x width"):
        decode_rle({"size": [2, 2], "counts": [1, 2]}, LOC)
    with pytest.raises(InputError, match="invalid character"):
        decode_rle({"size": [2, 2], "counts": " "}, LOC)
    assert mask_box(_mask((0, 1), (1, 1))) == [1, 0, 2, 2]
    assert mask_box(_mask()) is None


def _video(name: str, subset: str, frames: list[str], masks: dict[str, dict], exps: dict) -> dict:
    objects = {obj: {"category": "cup", "masks": m} for obj, m in masks.items()}
    return {"video": name, "subset": subset, "frames": frames, "objects": objects, "expressions": exps}


@pytest.fixture
def gt_dir(tmp_path):
    frames = ["00000", "00001", "00002", "00003"]
    a = {"00000": _mask((0, 0), (0, 1)), "00001": _mask((1, 1)), "00002": None, "00003": None}
    b = {"00000": None, "00001": None, "00002": _mask((0, 0)), "00003": _mask((0, 0))}
    videos = [
        _video(
            "vid_s",
            "short",
            frames,
            {"1": a, "2": b},
            {"0": {"exp": "the red cup", "obj_id": "1"}, "1": {"exp": "the blue bowl", "obj_id": "2"}},
        ),
        _video("vid_l", "long", frames, {"1": b}, {"0": {"exp": "the green box", "obj_id": "1"}}),
    ]
    root = tmp_path / "gt"
    write_ground_truth(root, videos)
    return root, {("vid_s", "1"): a, ("vid_s", "2"): b, ("vid_l", "1"): b}


def test_layout_files(gt_dir):
    root, _ = gt_dir
    meta = json.loads((root / "meta.json").read_text())["videos"]
    assert meta["vid_s"]["subset"] == "short"
    assert meta["vid_s"]["objects"]["1"]["frames"] == ["00000", "00001"]  # frames where it is present
    ann = json.loads((root / "annotations" / "vid_s" / "1.json").read_text())
    assert ann["00002"] is None and ann["00000"] == {"size": [2, 2], "counts": "01100"}  # runs 0, 1, 1, 1, 1
    sub = json.loads((root / "subset" / "long" / "meta_expressions.json").read_text())["videos"]
    assert list(sub) == ["vid_l"]
    exps = read_ground_truth(root)
    assert [(e.video, e.exp_id, e.obj_id, e.subset) for e in exps] == [
        ("vid_s", "0", "1", "short"),
        ("vid_s", "1", "2", "short"),
        ("vid_l", "0", "1", "long"),
    ]


def test_ground_truth_as_predictions_scores_100(gt_dir, tmp_path):
    root, masks = gt_dir
    for e in read_ground_truth(root):
        write_prediction(
            tmp_path / "pred", e, {f: m for f, m in masks[(e.video, e.obj_id)].items() if m is not None}
        )
    out = egomask_metrics(root, tmp_path / "pred")
    for key in ("T_recall", "IoU_all", "IoU_gold", "IoU_gold_pred", "F", "J&F", "presence_F1"):
        assert out[key] == pytest.approx(100.0), key
    assert out["missing_predictions"] == 0 and out["n_expressions"] == 3
    assert set(out["subsets"]) == {"short", "long"} and out["subsets"]["short"]["n_expressions"] == 2


def test_hand_computed_and_missing_file(gt_dir, tmp_path):
    root, _ = gt_dir
    exps = {(e.video, e.exp_id): e for e in read_ground_truth(root)}
    pred = tmp_path / "pred"
    # vid_s exp 0 (object 1 present on frames 0, 1): frame 0 overlaps 1 of 3 pixels of the union, frame 1
    # is missed, frame 2 predicts the object on a background frame, frame 3 is empty vs empty
    write_prediction(pred, exps[("vid_s", "0")], {"00000": _mask((0, 0), (1, 0)), "00002": _mask((1, 1))})
    # vid_s exp 1: no file at all; vid_l exp 0 written under EgoMask's "full" folder name, exact
    e = exps[("vid_l", "0")]
    write_prediction(tmp_path / "staging", e, {"00002": _mask((0, 0)), "00003": _mask((0, 0))})
    (pred / "full").mkdir()
    (tmp_path / "staging" / "long" / "vid_l").rename(pred / "full" / "vid_l")
    out = egomask_metrics(root, pred)
    s = out["subsets"]["short"]
    first = {
        "T_recall": 50.0,
        "IoU_all": 100 * (1 / 3 + 0 + 0 + 1) / 4,
        "IoU_gold": 100 * (1 / 3) / 2,
        "IoU_gold_pred": 100 * (1 / 3) / 3,  # frames {0, 1, 2}
        # 2x2 masks: every pixel is boundary; within 1 px each boundary covers the other on frame 0
        "F": 100 * (1 + 0 + 0 + 1) / 4,
        "presence_P": 50.0,
        "presence_R": 50.0,
        "presence_F1": 50.0,
    }
    # the missing file predicts nothing: right on the two background frames, wrong on the two others
    missing = {
        "T_recall": 0,
        "IoU_all": 50.0,
        "IoU_gold": 0,
        "IoU_gold_pred": 0,
        "F": 50.0,
        "presence_P": 0,
        "presence_R": 0,
        "presence_F1": 0,
    }
    for key, value in first.items():
        assert s[key] == pytest.approx((value + missing[key]) / 2), key
    assert s["J&F"] == pytest.approx((s["IoU_all"] + s["F"]) / 2)
    assert out["subsets"]["long"]["IoU_gold_pred"] == pytest.approx(100.0)
    assert out["missing_predictions"] == 1
    assert out["IoU_gold_pred"] == pytest.approx((100 / 9 + 0 + 100) / 3)  # the mean over expressions


def test_cli_folders_and_bad_prediction(gt_dir, tmp_path):
    root, masks = gt_dir
    e = read_ground_truth(root)[0]
    write_prediction(tmp_path / "pred", e, {"00000": masks[("vid_s", "1")]["00000"]})
    cmd = [
        sys.executable,
        "-m",
        "egovlp",
        "eval",
        "grounding",
        "--gt",
        str(root),
        "--pred",
        str(tmp_path / "pred"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert out["missing_predictions"] == 2 and "short" in out["subsets"]
    bad = tmp_path / "pred" / "short" / "vid_s" / "0" / "0-1.json"
    bad.write_text(json.dumps({"99999": encode_rle(_mask((0, 0)))}))
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "not a frame of video 'vid_s'" in done.stderr

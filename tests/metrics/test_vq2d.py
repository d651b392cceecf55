"""VQ2D metrics against hand-computed tAP / stAP / success / recovery values (DESIGN.md C.4)."""

from __future__ import annotations

import copy

import pytest

from egovlp.errors import InputError
from egovlp.metrics import vq2d_metrics
from egovlp.metrics.iou import segment_iou
from egovlp.metrics.vq2d import extent, spatio_temporal_iou


def _rt(frames: list[int], x: float = 0.0) -> list[dict]:
    return [{"frame_number": f, "x": x, "y": 0.0, "width": 10.0, "height": 10.0} for f in frames]


def _qset(frames: list[int], valid: bool = True) -> dict:
    visual_crop = {"frame_number": 99, "x": 0, "y": 0, "width": 5, "height": 5}
    return {
        "is_valid": valid,
        "query_frame": 50,
        "object_title": "cup",
        "visual_crop": visual_crop,
        "response_track": _rt(frames),
    }


def _gt() -> dict:
    annotations = [
        # item A; query set "2" is invalid (no response track at all) and is not scored
        {"query_sets": {"1": _qset([10, 11, 12]), "2": {"is_valid": False}}},
        # item B: a ground-truth track with a gap at frame 21; item C: frames 30..33
        {"query_sets": {"1": _qset([20, 22]), "2": _qset([30, 31, 32, 33])}},
    ]
    clip = {"clip_uid": "c1", "clip_fps": 5.0, "annotations": annotations}
    return {"version": "v2", "videos": [{"video_uid": "v1", "clips": [clip]}]}


def _track(frames: list[int], score: float | None, x: float = 0.0) -> dict:
    return {
        "bboxes": [{"fno": f, "x1": x, "y1": 0.0, "x2": x + 10.0, "y2": 10.0} for f in frames],
        "score": score,
    }


def _pred(a: dict, b: dict, c: dict) -> dict:
    predictions = [{"query_sets": {"1": a}}, {"query_sets": {"1": b, "2": c}}]
    videos = [{"video_uid": "v1", "clips": [{"clip_uid": "c1", "predictions": predictions}]}]
    return {"version": "v2", "challenge": "ego4d_vq2d_challenge", "results": {"videos": videos}}


# A: exact (tIoU 1, ST-IoU 1, 3 frames recovered)
# B: frames 20..22, extent equal (tIoU 1); shares 20 and 22: ST-IoU 200 / (300 + 200 - 200) = 2/3; 2 recovered
# C: frames 32..35 shifted 5 px (box IoU 1/3): tIoU 2/6 = 1/3; ST-IoU 100 / (400 + 400 - 100) = 1/7; 0 recovered
A, B, C = _track([10, 11, 12], 0.9), _track([20, 21, 22], 0.5), _track([32, 33, 34, 35], 0.7, x=5.0)


def test_hand_computed_metrics():
    # ranked A (0.9), C (0.7), B (0.5): tIoU 1, 1/3, 1 -> AP 1 at 0.25, 5/9 at 0.5, 0.75, 0.95
    #                                   ST-IoU 1, 1/7, 2/3 -> 5/9 at 0.25 and 0.5, 1/3 at 0.75 and 0.95
    out = vq2d_metrics(_gt(), _pred(A, B, C))
    assert out["tAP25"] == pytest.approx(1.0)
    assert out["tAP"] == pytest.approx((1 + 3 * 5 / 9) / 4)
    assert out["stAP25"] == pytest.approx(5 / 9)
    assert out["stAP"] == pytest.approx((5 / 9 + 5 / 9 + 1 / 3 + 1 / 3) / 4)
    assert out["success"] == pytest.approx(100.0)  # every ST-IoU >= 0.05
    assert out["recovery"] == pytest.approx(100.0 * (3 + 2 + 0) / (3 + 2 + 4))
    assert list(out) == ["tAP", "tAP25", "stAP", "stAP25", "success", "recovery"]


def test_empty_prediction_is_not_ranked_but_still_a_positive():
    # C predicts nothing: ranked A, B -> precision 1, 1 at recall 1/3, 2/3 (3 positives)
    out = vq2d_metrics(_gt(), _pred(A, B, {"bboxes": [], "score": None}))
    assert out["tAP"] == pytest.approx(2 / 3)
    assert out["stAP25"] == pytest.approx(2 / 3)
    assert out["stAP"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 / 3) / 4)
    assert out["success"] == pytest.approx(100.0 * 2 / 3)
    assert out["recovery"] == pytest.approx(100.0 * 5 / 9)


def test_score_ties_keep_ground_truth_order():
    # all scores 0.5: ranked A, B, C -> tIoU 1, 1, 1/3: AP 1 at 0.25, then 2/3 (C last; 4/9 if C came first)
    same = [dict(t, score=0.5) for t in (A, B, C)]
    out = vq2d_metrics(_gt(), _pred(*same))
    assert out["tAP"] == pytest.approx((1 + 3 * 2 / 3) / 4)


def test_low_score_wrong_prediction_fails_success():
    far = _track([40, 41], 0.1, x=100.0)  # no overlap with C at all
    out = vq2d_metrics(_gt(), _pred(A, B, far))
    assert out["success"] == pytest.approx(100.0 * 2 / 3)


def test_iou_helpers_on_gapped_tracks():
    gt = {20: (0.0, 0.0, 10.0, 10.0), 22: (0.0, 0.0, 10.0, 10.0)}
    pred = {f: (0.0, 0.0, 10.0, 10.0) for f in (20, 21, 22)}
    assert (
        segment_iou(extent(pred), extent(gt), inclusive=True) == 1.0
    )  # extents (20, 22) both; the gap does not shrink the extent
    assert spatio_temporal_iou(pred, gt) == pytest.approx(2 / 3)
    assert segment_iou((5, 5), (5, 5), inclusive=True) == 1.0  # single frame, inclusive convention
    assert spatio_temporal_iou({5: (0, 0, 0, 0)}, {5: (0, 0, 0, 0)}) == 0.0  # empty volumes


def test_missing_valid_query_set_is_rejected():
    pred = _pred(A, B, C)
    del pred["results"]["videos"][0]["clips"][0]["predictions"][1]["query_sets"]["2"]
    with pytest.raises(
        InputError,
        match=r"^p\.json: results\.videos\[0\]\.clips\[0\]\.predictions\[1\]\.query_sets: missing query set '2'",
    ):
        vq2d_metrics(_gt(), pred, pred_name="p.json")


def test_prediction_for_invalid_query_set_is_ignored():
    pred = _pred(A, B, C)
    pred["results"]["videos"][0]["clips"][0]["predictions"][0]["query_sets"]["2"] = {"anything": 1}
    assert vq2d_metrics(_gt(), pred) == vq2d_metrics(_gt(), _pred(A, B, C))


_PREDS = r"results\.videos\[0\]\.clips\[0\]\.predictions"
_A = _PREDS + r'\[0\]\.query_sets\["1"\]'


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda p: p["results"]["videos"][0].update(video_uid="v9"),
            r"results\.videos\[0\]\.video_uid: expected 'v1'",
        ),
        (lambda p: p["results"]["videos"].append({}), r"results\.videos: 2 videos, the ground truth has 1"),
        (
            lambda p: p["results"]["videos"][0]["clips"][0]["predictions"].pop(),
            _PREDS + ": 1 predictions, the ground truth has 2",
        ),
        (lambda p: _qs(p, 0, "1").update(score="high"), _A + r"\.score: expected a finite number"),
        (lambda p: _qs(p, 0, "1").pop("score"), _A + r": missing key 'score'"),
        (
            lambda p: _qs(p, 0, "1")["bboxes"][0].update(x2=-5.0),
            _A + r"\.bboxes\[0\]: box corners out of order",
        ),
        (
            lambda p: _qs(p, 0, "1")["bboxes"].append(dict(_qs(p, 0, "1")["bboxes"][0])),
            _A + r"\.bboxes\[3\]: frame 10 has more than one box",
        ),
        (
            lambda p: _qs(p, 0, "1")["bboxes"][0].update(fno=1.5),
            _A + r"\.bboxes\[0\]\.fno: expected an integer",
        ),
        (
            lambda p: _qs(p, 1).update({"7": {}}),
            _PREDS + r'\[1\]\.query_sets\["7"\]: no such query set in the ground truth',
        ),
        (lambda p: p.update(challenge="x"), r"challenge: expected 'ego4d_vq2d_challenge'"),
        (lambda p: p.update(version="v1"), r"version: 'v1' does not match the ground truth's 'v2'"),
        (lambda p: p.pop("results"), r"top level: missing key 'results'"),
    ],
)
def test_malformed_predictions_name_file_and_path(mutate, message):
    pred = copy.deepcopy(_pred(A, B, C))
    mutate(pred)
    with pytest.raises(InputError, match=r"^p\.json: " + message):
        vq2d_metrics(_gt(), pred, pred_name="p.json")


def _qs(pred: dict, ann: int, qid: str | None = None) -> dict:
    sets = pred["results"]["videos"][0]["clips"][0]["predictions"][ann]["query_sets"]
    return sets if qid is None else sets[qid]


def test_ground_truth_problems_are_reported():
    gt = _gt()
    for ann in gt["videos"][0]["clips"][0]["annotations"]:
        for q in ann["query_sets"].values():
            q["is_valid"] = False
    with pytest.raises(InputError, match=r"^g\.json: top level: no valid query sets"):
        vq2d_metrics(gt, _pred(A, B, C), gt_name="g.json")
    gt = _gt()
    gt["videos"][0]["clips"][0]["annotations"][1]["query_sets"]["1"]["response_track"] = []
    with pytest.raises(
        InputError, match=r'annotations\[1\]\.query_sets\["1"\]\.response_track: empty response track'
    ):
        vq2d_metrics(gt, _pred(A, B, C))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("visual_crop", None, r"query_sets\[\"1\"\]: missing 'visual_crop'"),
        ("query_frame", None, r"query_sets\[\"1\"\]: missing 'query_frame'"),
        (
            "visual_crop",
            {"frame_number": 99, "x": 0, "y": 0, "width": "wide", "height": 5},
            r'query_sets\["1"\]\.visual_crop\.width: expected a number, got \'wide\'',
        ),
    ],
)
def test_ground_truth_is_validated_as_extract_and_heads_do(field, value, message):
    gt = _gt()
    gt["videos"][0]["clips"][0]["annotations"][0]["query_sets"]["1"][field] = value
    with pytest.raises(InputError, match=r"^g\.json: videos\[0\]\.clips\[0\]\.annotations\[0\]\." + message):
        vq2d_metrics(gt, _pred(A, B, C), gt_name="g.json")

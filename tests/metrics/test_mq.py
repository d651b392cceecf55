"""MQ metric against hand-computed ActivityNet AP and Recall@1x values (DESIGN.md C.3)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from egovlp.errors import InputError
from egovlp.metrics import mq_metrics
from egovlp.metrics.mq import voc_interpolated_ap


def _label(label: str, start: float, end: float, primary: bool = True) -> dict:
    return {"label": label, "start_time": start, "end_time": end, "primary": primary}


def _gt() -> dict:
    c1 = {
        "clip_uid": "c1",
        "annotations": [
            {
                "annotator_uid": "x",
                "labels": [
                    _label("cut", 0, 10),
                    _label("cut", 20, 30),
                    _label("wash", 5, 15),
                    _label("cut", 40, 50, primary=False),  # not primary: not ground truth
                ],
            }
        ],
    }
    c2 = {
        "clip_uid": "c2",
        "annotations": [
            {"annotator_uid": "x", "labels": [_label("cut", 0, 10), _label("jump", 70, 80)]},
            {"annotator_uid": "y", "labels": [_label("wash", 50, 60)]},  # a second annotator counts too
        ],
    }
    return {"videos": [{"video_uid": "v1", "clips": [c1, c2]}]}


def _det(label: str, score: float, start: float, end: float) -> dict:
    return {"label": label, "score": score, "segment": [start, end]}


def _pred() -> dict:
    return {
        "version": "1.0",
        "challenge": "ego4d_moment_queries",
        "detect_results": {
            "c1": [
                _det("cut", 0.9, 0, 10),  # p1: tIoU 1 with [0, 10] -> TP
                _det("cut", 0.8, 1, 10),  # p2: best GT [0, 10] already taken; [20, 30] has tIoU 0 -> FP
                _det("cut", 0.5, 20, 25),  # p5: tIoU 0.5 with [20, 30] -> TP even at 0.5 (>=)
                _det("wash", 0.7, 5, 15),  # q1: TP; ties with q2, and comes first in file order
                _det("fly", 0.99, 0, 10),  # a class absent from the ground truth: ignored
            ],
            "c2": [
                _det("cut", 0.7, 0, 4),  # p3: tIoU 0.4 with [0, 10] -> TP at 0.1..0.4, FP at 0.5
                _det("wash", 0.7, 0, 1),  # q2: no overlap -> FP
            ],
            "c3": [_det("cut", 0.6, 0, 10)],  # p4: a clip without ground truth -> FP
            # "jump" has no detection at all: AP 0
        },
    }


def test_hand_computed_map_and_recall():
    # cut (3 GT) ranked p1 TP, p2 FP, p3 TP/FP, p4 FP, p5 TP:
    #   t <= 0.4: precision 1, 1/2, 2/3, 1/2, 3/5 at recall 1/3, 1/3, 2/3, 2/3, 1 -> AP (1 + 2/3 + 3/5)/3
    #   t = 0.5:  precision 1, 1/2, 1/3, 1/4, 2/5 at recall 1/3, .., 2/3          -> AP (1 + 2/5)/3
    # wash (2 GT) ranked q1 TP, q2 FP -> AP 1/2 at every t; jump -> 0
    cut_low, cut_05 = (1 + Fraction(2, 3) + Fraction(3, 5)) / 3, (1 + Fraction(2, 5)) / 3
    map_low, map_05 = (cut_low + Fraction(1, 2)) / 3, (cut_05 + Fraction(1, 2)) / 3
    out = mq_metrics(_gt(), _pred())
    for t in ("0.1", "0.2", "0.3", "0.4"):
        assert out[f"mAP@{t}"] == pytest.approx(100 * float(map_low))
    assert out["mAP@0.5"] == pytest.approx(100 * float(map_05))
    assert out["mAP"] == pytest.approx(100 * float((4 * map_low + map_05) / 5))
    # R1x@0.5: cut: c1 top-2 = p1, p2 recall [0, 10] only; c2 top-1 = p3 (0.4) -> 1/3
    #          wash: c1 q1 yes, c2 q2 no -> 1/2; jump: 0
    assert out["R1x@0.5"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 0) / 3)
    assert list(out) == ["mAP@0.1", "mAP@0.2", "mAP@0.3", "mAP@0.4", "mAP@0.5", "mAP", "R1x@0.5"]


def test_score_ties_keep_file_order():
    pred = _pred()
    c1, c2 = pred["detect_results"]["c1"], pred["detect_results"]["c2"]
    # the same two tied wash detections, the false positive now first in file order: AP 1/4, not 1/2
    pred["detect_results"] = {
        "c2": [d for d in c2 if d["label"] == "wash"],
        "c1": [d for d in c1 if d["label"] == "wash"],
    }
    out = mq_metrics(_gt(), pred)
    assert out["mAP@0.5"] == pytest.approx(100 * (0 + 0.25 + 0) / 3)


def test_greedy_match_takes_the_highest_tiou_unmatched_ground_truth():
    gt = {
        "videos": [
            {
                "clips": [
                    {"clip_uid": "c", "annotations": [{"labels": [_label("a", 0, 10), _label("a", 8, 20)]}]}
                ]
            }
        ]
    }
    # d1 [5, 14]: tIoU 5/14 with [0, 10], 6/15 with [8, 20] -> takes [8, 20]
    # d2 [9, 19]: tIoU 10/12 with the taken [8, 20]; the free [0, 10] gives 1/19 < 0.1 -> FP
    # (matching d1 to [0, 10] instead would make both TP and AP 1)
    pred = {"detect_results": {"c": [_det("a", 0.9, 5, 14), _det("a", 0.8, 9, 19)]}}
    assert mq_metrics(gt, pred)["mAP@0.1"] == pytest.approx(50.0)


def test_no_detections_gives_zero():
    out = mq_metrics(_gt(), {"detect_results": {}})
    assert all(v == 0.0 for v in out.values())


def test_activitynet_results_key_is_accepted():
    pred = _pred()
    pred["results"] = pred.pop("detect_results")
    assert mq_metrics(_gt(), pred) == mq_metrics(_gt(), _pred())


def test_voc_interpolated_ap():
    precision, recall = np.array([1.0, 0.5, 2 / 3, 0.5, 0.6]), np.array([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0])
    assert voc_interpolated_ap(precision, recall) == pytest.approx(34 / 45)
    assert voc_interpolated_ap(np.array([1.0]), np.array([0.5])) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda p: p["detect_results"]["c1"][0].update(segment=[1, 2, 3]),
            r"detect_results\.c1\[0\]\.segment: expected \[start, end\]",
        ),
        (
            lambda p: p["detect_results"]["c1"][0].pop("score"),
            r"detect_results\.c1\[0\]: missing key 'score'",
        ),
        (
            lambda p: p["detect_results"]["c1"][0].update(label=3),
            r"detect_results\.c1\[0\]\.label: expected a non-empty string",
        ),
        (lambda p: p["detect_results"].update({"a-b": {}}), r'detect_results\["a-b"\]: expected a list'),
        (lambda p: p.pop("detect_results"), r"top level: missing key 'detect_results'"),
        (lambda p: p.update(challenge="ego4d_nlq_challenge"), r"challenge: expected 'ego4d_moment_queries'"),
    ],
)
def test_malformed_predictions_name_file_and_path(mutate, message):
    pred = _pred()
    mutate(pred)
    with pytest.raises(InputError, match=r"^mq_pred\.json: " + message):
        mq_metrics(_gt(), pred, pred_name="mq_pred.json")


def test_ground_truth_without_primary_labels_is_rejected():
    gt = {
        "videos": [
            {"clips": [{"clip_uid": "c", "annotations": [{"labels": [_label("a", 0, 1, primary=False)]}]}]}
        ]
    }
    with pytest.raises(InputError, match=r"^m\.json: top level: no primary moment labels"):
        mq_metrics(gt, _pred(), gt_name="m.json")


def test_malformed_ground_truth_names_path():
    gt = _gt()
    gt["videos"][0]["clips"][1]["annotations"][1]["labels"][0]["end_time"] = "soon"
    with pytest.raises(
        InputError,
        match=r"videos\[0\]\.clips\[1\]\.annotations\[1\]\.labels\[0\]\.end_time: expected a number",
    ):
        mq_metrics(gt, _pred())

"""NLQ metric against hand-computed values (DESIGN.md C.2): strict >, recall over prediction entries."""

from __future__ import annotations

import pytest

from egovlp.errors import InputError
from egovlp.metrics import nlq_metrics
from egovlp.metrics.iou import segment_iou


def _gt() -> dict:
    queries_a1 = [
        {"clip_start_sec": 10.0, "clip_end_sec": 20.0, "query": "where is the cup?", "template": "t"},
        {"clip_start_sec": 0.0, "clip_end_sec": 4.0, "query": "when did I cut?"},
        {"clip_start_sec": 5.0, "clip_end_sec": 5.0, "query": "a zero-length window"},
        {"template": "a query without text: counted in total, skipped otherwise"},
    ]
    queries_a2 = [{"clip_start_sec": 30.0, "clip_end_sec": 40.0, "query": "what did I open?"}]
    clip = {
        "clip_uid": "c1",
        "annotations": [
            {"annotation_uid": "a1", "language_queries": queries_a1},
            {"annotation_uid": "a2", "language_queries": queries_a2},
        ],
    }
    return {"videos": [{"video_uid": "v1", "clips": [clip]}]}


def _entry(ann: str, idx: int, windows: list) -> dict:
    return {"clip_uid": "c1", "annotation_uid": ann, "query_idx": idx, "predicted_times": windows}


def _pred(*entries: dict) -> dict:
    return {"version": "1.0", "challenge": "ego4d_nlq_challenge", "results": list(entries)}


def test_hand_computed_recalls_and_miou():
    pred = _pred(
        # GT [10, 20]: rank 1 IoU 5/10 = 0.5 exactly (a hit at 0.3, NOT at 0.5), rank 2 IoU 1
        _entry("a1", 0, [[10.0, 15.0], [10.0, 20.0]]),
        # GT [0, 4]: rank 1 IoU 2/6 = 1/3 (> 0.3), ranks 2-3 miss, rank 4 IoU 1 (only R@5 sees it)
        _entry("a1", 1, [[2.0, 6.0], [50.0, 60.0], [50.0, 60.0], [0.0, 4.0]]),
        # zero-length GT [5, 5]: every IoU is 0, including the identical zero-length window
        _entry("a1", 2, [[4.0, 6.0], [5.0, 5.0]]),
        # no windows at all: every rank is a miss, rank-1 IoU 0
        _entry("a2", 0, []),
    )
    out = nlq_metrics(_gt(), pred)
    assert out["evaluated"] == 4 and out["total"] == 5
    assert isinstance(out["evaluated"], int) and isinstance(out["total"], int)
    assert out["R1@0.3"] == pytest.approx(50.0)  # entries 0 and 1
    assert out["R3@0.3"] == pytest.approx(50.0)
    assert out["R5@0.3"] == pytest.approx(50.0)
    assert out["R1@0.5"] == pytest.approx(0.0)  # 0.5 is not > 0.5
    assert out["R3@0.5"] == pytest.approx(25.0)  # entry 0 at rank 2
    assert out["R5@0.5"] == pytest.approx(50.0)  # + entry 1 at rank 4
    assert out["mIoU"] == pytest.approx(100.0 * (0.5 + 1 / 3) / 4)
    assert list(out) == [
        "R1@0.3",
        "R3@0.3",
        "R5@0.3",
        "R1@0.5",
        "R3@0.5",
        "R5@0.5",
        "mIoU",
        "evaluated",
        "total",
    ]


def test_recall_is_averaged_over_prediction_entries_not_ground_truth():
    out = nlq_metrics(_gt(), _pred(_entry("a2", 0, [[30.0, 40.0]])))
    assert out["R1@0.5"] == pytest.approx(100.0)  # 1 of 1 entry, though the GT holds 5 queries
    assert out["mIoU"] == pytest.approx(100.0)
    assert (out["evaluated"], out["total"]) == (1, 5)


def test_empty_results_score_zero():
    out = nlq_metrics(_gt(), _pred())
    assert out["evaluated"] == 0 and out["total"] == 5
    assert all(out[k] == 0.0 for k in out if k.startswith("R") or k == "mIoU")


def test_temporal_iou_edge_cases():
    assert segment_iou((0.0, 10.0), (0.0, 5.0)) == 0.5
    assert segment_iou((5.0, 5.0), (5.0, 5.0)) == 0.0  # empty union
    assert segment_iou((5.0, 5.0), (0.0, 10.0)) == 0.0  # zero-length inside a window
    assert segment_iou((0.0, 2.0), (3.0, 4.0)) == 0.0  # disjoint


def test_prediction_for_unknown_clip_is_rejected():
    bad = _pred({"clip_uid": "nope", "annotation_uid": "a1", "query_idx": 0, "predicted_times": []})
    with pytest.raises(InputError, match=r"preds\.json: results\[0\]: .*'nope'.*not in gt\.json"):
        nlq_metrics(_gt(), bad, gt_name="gt.json", pred_name="preds.json")


def test_query_idx_out_of_range_is_rejected():
    with pytest.raises(InputError, match=r"results\[1\]\.query_idx: .*no language query 7"):
        nlq_metrics(_gt(), _pred(_entry("a1", 0, []), _entry("a1", 7, [])))


def test_duplicate_prediction_is_rejected():
    with pytest.raises(InputError, match=r"results\[1\]: a second prediction .* results\[0\]"):
        nlq_metrics(_gt(), _pred(_entry("a1", 0, []), _entry("a1", 0, [])))


def test_prediction_for_windowless_query_is_rejected():
    with pytest.raises(InputError, match="no text and no window"):
        nlq_metrics(_gt(), _pred(_entry("a1", 3, [[0.0, 1.0]])))


@pytest.mark.parametrize(
    ("pred", "message"),
    [
        (
            {"results": [_entry("a1", 0, [[5.0, 1.0]])]},
            r"results\[0\]\.predicted_times\[0\]: end 1 is before start 5",
        ),
        (
            {"results": [_entry("a1", 0, [[1.0, 2.0, 3.0]])]},
            r"results\[0\]\.predicted_times\[0\]: expected \[start, end\]",
        ),
        ({"results": [_entry("a1", "0", [])]}, r"results\[0\]\.query_idx: expected an integer"),
        (
            {"results": [_entry("a1", True, [])]},
            r"results\[0\]\.query_idx: expected an integer, got a boolean",
        ),
        (
            {"results": [_entry("a1", 0, [[0.0, float("nan")]])]},
            r"results\[0\]\.predicted_times\[0\]\[1\]: expected a finite number",
        ),
        ({"results": {"c1": []}}, r"results: expected a list"),
        ({"version": "1.0"}, r"top level: missing key 'results'"),
        ({"challenge": "ego4d_vq2d_challenge", "results": []}, r"challenge: expected 'ego4d_nlq_challenge'"),
        ([], r"top level: expected an object"),
    ],
)
def test_malformed_predictions_name_file_and_path(pred, message):
    with pytest.raises(InputError, match=r"^p\.json: " + message):
        nlq_metrics(_gt(), pred, pred_name="p.json")


def test_malformed_ground_truth_names_file_and_path():
    gt = _gt()
    del gt["videos"][0]["clips"][0]["clip_uid"]
    with pytest.raises(InputError, match=r"^g\.json: videos\[0\]\.clips\[0\]: missing 'clip_uid'"):
        nlq_metrics(gt, _pred(), gt_name="g.json")
    gt = _gt()
    gt["videos"][0]["clips"][0]["annotations"][0]["language_queries"][0]["clip_end_sec"] = 1.0
    with pytest.raises(
        InputError, match=r"language_queries\[0\]: clip_end_sec 1 is before clip_start_sec 10"
    ):
        nlq_metrics(gt, _pred())

"""`egovlp eval nlq|mq|vq2d|grounding`: exactly one JSON object on stdout with the C.5 keys; clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from egovlp.cli import run
from egovlp.errors import InputError
from egovlp.metrics.cli import _module_main, main

REPO = Path(__file__).resolve().parents[2]

NLQ_KEYS = {"R1@0.3", "R3@0.3", "R5@0.3", "R1@0.5", "R3@0.5", "R5@0.5", "mIoU", "evaluated", "total"}
MQ_KEYS = {"mAP@0.1", "mAP@0.2", "mAP@0.3", "mAP@0.4", "mAP@0.5", "mAP", "R1x@0.5"}
VQ2D_KEYS = {"tAP", "tAP25", "stAP", "stAP25", "success", "recovery"}
GROUNDING_KEYS = {"T_recall", "IoU_all", "IoU_gold", "IoU_gold_pred", "n_queries"}


def _files(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    nlq_gt = {
        "videos": [
            {
                "video_uid": "v",
                "clips": [
                    {
                        "clip_uid": "c",
                        "annotations": [
                            {
                                "annotation_uid": "a",
                                "language_queries": [
                                    {"clip_start_sec": 0.0, "clip_end_sec": 10.0, "query": "q"},
                                    {"template": "no text"},
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    nlq_pred = {
        "version": "1.0",
        "challenge": "ego4d_nlq_challenge",
        "results": [
            {"clip_uid": "c", "annotation_uid": "a", "query_idx": 0, "predicted_times": [[0.0, 5.0]]}
        ],
    }
    label = {"label": "cut", "start_time": 0.0, "end_time": 10.0, "primary": True}
    mq_gt = {"videos": [{"clips": [{"clip_uid": "c", "annotations": [{"labels": [label]}]}]}]}
    mq_pred = {"detect_results": {"c": [{"label": "cut", "score": 0.5, "segment": [0.0, 10.0]}]}}
    track = [{"frame_number": 3, "x": 0, "y": 0, "width": 4, "height": 4}]
    vq_gt = {
        "videos": [
            {
                "video_uid": "v",
                "clips": [
                    {
                        "clip_uid": "c",
                        "annotations": [
                            {
                                "query_sets": {
                                    "1": {
                                        "is_valid": True,
                                        "query_frame": 9,
                                        "visual_crop": {**track[0], "frame_number": 8},
                                        "response_track": track,
                                    }
                                }
                            }
                        ],
                    }
                ],
            }
        ]
    }
    box = {"fno": 3, "x1": 0, "y1": 0, "x2": 4, "y2": 4}
    predictions = [{"query_sets": {"1": {"bboxes": [box], "score": 1.0}}}]
    vq_pred = {
        "results": {"videos": [{"video_uid": "v", "clips": [{"clip_uid": "c", "predictions": predictions}]}]}
    }
    gr_gt = {"queries": {"q": {"frames": {"0": [0, 0, 2, 2], "1": None}}}}
    gr_pred = {"results": {"q": {"frames": {"0": [0, 0, 2, 2]}}}}
    out = {}
    for task, (gt, pred) in {
        "nlq": (nlq_gt, nlq_pred),
        "mq": (mq_gt, mq_pred),
        "vq2d": (vq_gt, vq_pred),
        "grounding": (gr_gt, gr_pred),
    }.items():
        gpath, ppath = tmp_path / f"{task}_gt.json", tmp_path / f"{task}_pred.json"
        gpath.write_text(json.dumps(gt))
        ppath.write_text(json.dumps(pred))
        out[task] = (gpath, ppath)
    return out


@pytest.mark.parametrize(
    ("task", "keys"), [("nlq", NLQ_KEYS), ("mq", MQ_KEYS), ("vq2d", VQ2D_KEYS), ("grounding", GROUNDING_KEYS)]
)
def test_dispatcher_prints_one_json_object(tmp_path, capsys, task, keys):
    gt, pred = _files(tmp_path)[task]
    assert run(["eval", task, "--gt", str(gt), "--pred", str(pred)]) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("\n") == 1 and stdout.endswith("\n")
    result = json.loads(stdout)
    assert set(result) == keys
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in result.values())


def test_values_and_units(tmp_path, capsys):
    files = _files(tmp_path)
    main(["nlq", "--gt", str(files["nlq"][0]), "--pred", str(files["nlq"][1])])
    nlq = json.loads(capsys.readouterr().out)
    # IoU 0.5: a hit at 0.3 only (strict >); percent; counts are integers
    assert (nlq["R1@0.3"], nlq["R1@0.5"], nlq["mIoU"], nlq["evaluated"], nlq["total"]) == (
        100.0,
        0.0,
        50.0,
        1,
        2,
    )
    main(["vq2d", "--gt", str(files["vq2d"][0]), "--pred", str(files["vq2d"][1])])
    vq = json.loads(capsys.readouterr().out)
    assert (vq["tAP"], vq["stAP25"], vq["success"], vq["recovery"]) == (
        1.0,
        1.0,
        100.0,
        100.0,
    )  # fractions vs percent


def test_out_file_matches_stdout(tmp_path, capsys):
    gt, pred = _files(tmp_path)["mq"]
    out = tmp_path / "metrics.json"
    assert main(["mq", "--gt", str(gt), "--pred", str(pred), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text())["mAP"] == pytest.approx(100.0)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_malformed_file_is_one_line_exit_2(tmp_path, capsys):
    gt, _ = _files(tmp_path)["nlq"]
    bad = tmp_path / "broken.json"
    bad.write_text('{"results": [')
    assert run(["eval", "nlq", "--gt", str(gt), "--pred", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "broken.json: not valid JSON" in captured.err
    with pytest.raises(InputError, match=r"missing\.json: file not found"):
        main(["nlq", "--gt", str(gt), "--pred", str(tmp_path / "missing.json")])


def test_wrong_content_names_file_and_path(tmp_path):
    gt, pred = _files(tmp_path)["mq"]
    pred.write_text(json.dumps({"detect_results": {"c": [{"label": "cut", "score": 1, "segment": [3, 1]}]}}))
    with pytest.raises(
        InputError, match=rf"^{pred}: detect_results\.c\[0\]\.segment: end 1 is before start 3"
    ):
        main(["mq", "--gt", str(gt), "--pred", str(pred)])


def test_python_dash_m_works(tmp_path):
    # one subprocess only: importing egovlp pulls in torch, which costs seconds on a loaded machine
    gt, pred = _files(tmp_path)["nlq"]
    cmd = [sys.executable, "-m", "egovlp.metrics.cli", "nlq", "--gt", str(gt), "--pred", str(pred)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == NLQ_KEYS


def test_module_entry_point_fails_cleanly(tmp_path, capsys, monkeypatch):
    gt, _ = _files(tmp_path)["nlq"]
    argv = ["egovlp.metrics.cli", "nlq", "--gt", str(gt), "--pred", str(tmp_path / "nope.json")]
    monkeypatch.setattr(sys, "argv", argv)
    assert _module_main() == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "nope.json: file not found" in captured.err


def test_help_lists_the_tasks(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    usage = capsys.readouterr().out
    assert all(task in usage for task in ("nlq", "mq", "vq2d", "grounding"))

"""FHO OSCC / PNR (DESIGN.md C.7): the annotation reader, the official index mapping, hand-computed
metrics and every error case of `egovlp eval oscc|pnr`."""

from __future__ import annotations

import copy
import json

import pytest

from egovlp.cli import run
from egovlp.errors import InputError
from egovlp.formats.fho import parse_fho, pnr_index_to_frame, pnr_label, read_fho
from egovlp.metrics.fho import oscc_metrics, pnr_metrics


def clip(
    uid: str, start_sec: float, end_sec: float, start_frame: int, end_frame: int, pnr: int | None
) -> dict:
    return {
        "unique_id": uid,
        "video_uid": "v1",
        "clip_uid": "c1",
        "clip_id": 7,
        "parent_start_sec": start_sec,
        "parent_end_sec": end_sec,
        "parent_start_frame": start_frame,
        "parent_end_frame": end_frame,
        "clip_start_sec": start_sec - 1.0,
        "clip_end_sec": end_sec - 1.0,
        "clip_start_frame": start_frame - 30,
        "clip_end_frame": end_frame - 30,
        "parent_pnr_frame": pnr,
        "clip_pnr_frame": None if pnr is None else pnr - 30,
        "state_change": pnr is not None,
    }


# a: 8 s window, fps = 241 / 8 = 30.125; b: a 4 s window, fps = 121 / 4 = 30.25;
# c: no state change (null PNR); d: 8 s window whose mapped frames are not integers (step 200 / 16 = 12.5)
GT = {
    "clips": [
        clip("a", 10.0, 18.0, 300, 540, 400),
        clip("b", 2.0, 6.0, 60, 180, 150),
        clip("c", 0.0, 8.0, 0, 240, None),
        clip("d", 20.0, 28.0, 600, 800, 700),
    ]
}


def test_reader_fields_fps_and_label():
    clips = parse_fho(GT, "gt.json")
    a, b, c, d = clips
    assert (a.unique_id, a.clip_id, a.parent_pnr_frame, a.clip_pnr_frame, a.state_change) == (
        "a",
        7,
        400,
        370,
        True,
    )
    assert c.parent_pnr_frame is None and c.clip_pnr_frame is None and not c.state_change
    assert a.fps == pytest.approx(241 / 8) and b.fps == pytest.approx(121 / 4)
    # the official mapping: start + (end - start) / 16 * i, not rounded
    assert pnr_index_to_frame(600, 800, 3) == 637.5
    assert pnr_index_to_frame(300, 540, 16) == 540.0
    # a: frames 300 + 15 i; 400 lies between i=6 (390) and i=7 (405): nearest 7
    assert pnr_label(a) == 7
    # b: frames 60 + 7.5 i; 150 = i 12 exactly
    assert pnr_label(b) == 12
    # d: frames 600 + 12.5 i; 700 = i 8 exactly; a tie (706.25 between 700 and 712.5) takes the lower index
    assert pnr_label(d) == 8
    tie = parse_fho({"clips": [clip("t", 20.0, 28.0, 600, 800, 706)]}, "t")[0]
    assert pnr_label(tie) == 8
    assert pnr_label(c) is None


def test_read_fho_from_file(tmp_path):
    path = tmp_path / "fho.json"
    path.write_text(json.dumps(GT))
    assert [c.unique_id for c in read_fho(path)] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda g: g.pop("clips"), r"missing 'clips'"),
        (lambda g: g.update(clips=[]), r"no clips"),
        (lambda g: g["clips"][0].pop("parent_end_frame"), r"clips\[0\]: missing 'parent_end_frame'"),
        (
            lambda g: g["clips"][0].update(state_change="yes"),
            r"clips\[0\]\.state_change: expected true/false",
        ),
        (lambda g: g["clips"][0].update(parent_pnr_frame=None), r"clips\[0\]: missing 'parent_pnr_frame'"),
        (
            lambda g: g["clips"][0].update(parent_pnr_frame=900),
            r"parent_pnr_frame: 900 is outside the window",
        ),
        (lambda g: g["clips"][0].update(parent_start_sec="ten"), r"parent_start_sec: expected a number"),
        (
            lambda g: g["clips"][0].update(parent_start_frame=300.5),
            r"parent_start_frame: expected an integer",
        ),
        (lambda g: g["clips"][0].update(parent_end_sec=10.0), r"parent_end_sec 10 is not after"),
        (lambda g: g["clips"][0].update(parent_end_frame=300), r"parent_end_frame 300 is not after"),
        (lambda g: g["clips"][1].update(unique_id="a"), r"clips\[1\]\.unique_id: 'a' repeats clips\[0\]"),
        (lambda g: g["clips"][1].update(clip_id=None), r"clips\[1\]: missing 'clip_id'"),
        (lambda g: g["clips"].append(3), r"clips\[4\]: expected an object"),
    ],
)
def test_reader_rejects_malformed_annotations(mutate, message):
    gt = copy.deepcopy(GT)
    mutate(gt)
    with pytest.raises(InputError, match=rf"^gt\.json: .*{message}"):
        parse_fho(gt, "gt.json")


def test_oscc_accuracy_over_all_clips():
    pred = [
        {"unique_id": "a", "state_change": True},
        {"unique_id": "b", "state_change": False},  # wrong
        {"unique_id": "c", "state_change": False},
        {"unique_id": "d", "state_change": True},
    ]
    assert oscc_metrics(GT, pred) == {"accuracy": pytest.approx(75.0), "n": 4}
    pred[2]["state_change"] = True  # wrong on the negative too
    assert oscc_metrics(GT, pred)["accuracy"] == pytest.approx(50.0)


def test_pnr_error_in_seconds_over_state_change_clips():
    pred = [
        {"unique_id": "a", "pnr_frame": 405.0},  # 5 frames at 30.125 fps
        {"unique_id": "b", "pnr_frame": pnr_index_to_frame(60, 180, 11)},  # 142.5: 7.5 frames at 30.25 fps
        {"unique_id": "c", "pnr_frame": 3.0},  # no state change: ignored
        {"unique_id": "d", "pnr_frame": pnr_index_to_frame(600, 800, 3)},  # 637.5: 62.5 frames at 25.125 fps
    ]
    expected = (5 / (241 / 8) + 7.5 / (121 / 4) + 62.5 / (201 / 8)) / 3
    assert pnr_metrics(GT, pred) == {"error_sec": pytest.approx(expected, rel=1e-12), "n": 3}
    # the negative may be left out or predicted as null
    assert pnr_metrics(GT, [p for p in pred if p["unique_id"] != "c"])["error_sec"] == pytest.approx(expected)
    pred[2]["pnr_frame"] = None
    assert pnr_metrics(GT, pred)["n"] == 3


@pytest.mark.parametrize("task", ["oscc", "pnr"])
def test_id_errors(task):
    value = {"oscc": {"state_change": True}, "pnr": {"pnr_frame": 400}}[task]
    metric = {"oscc": oscc_metrics, "pnr": pnr_metrics}[task]
    full = [{"unique_id": uid, **value} for uid in "abcd"]
    with pytest.raises(InputError, match=r"^pred\.json: top level: no prediction for .*'b'"):
        metric(GT, [p for p in full if p["unique_id"] != "b"], gt_name="gt.json", pred_name="pred.json")
    with pytest.raises(
        InputError, match=r"^pred\.json: \[4\]\.unique_id: 'a' was already predicted at \[0\]"
    ):
        metric(GT, [*full, full[0]], gt_name="gt.json", pred_name="pred.json")
    with pytest.raises(InputError, match=r"^pred\.json: \[4\]\.unique_id: 'zz' is not a clip of gt\.json"):
        metric(GT, [*full, {"unique_id": "zz", **value}], gt_name="gt.json", pred_name="pred.json")
    with pytest.raises(InputError, match=r"^pred\.json: top level: expected a list"):
        metric(GT, {"results": full}, gt_name="gt.json", pred_name="pred.json")
    with pytest.raises(InputError, match=r"\[0\]: missing key 'unique_id'"):
        metric(GT, [value, *full[1:]], gt_name="gt.json", pred_name="pred.json")


def test_value_errors_and_no_positives():
    oscc = [{"unique_id": uid, "state_change": True} for uid in "abcd"]
    oscc[1]["state_change"] = 1
    with pytest.raises(InputError, match=r"\[1\]\.state_change: expected true/false"):
        oscc_metrics(GT, oscc)
    pnr = [{"unique_id": uid, "pnr_frame": 400} for uid in "abd"]
    pnr[0]["pnr_frame"] = None  # a state-change clip needs a number
    with pytest.raises(InputError, match=r"\[0\]\.pnr_frame: expected a finite number, got null"):
        pnr_metrics(GT, pnr)
    pnr[0]["pnr_frame"] = "400"
    with pytest.raises(InputError, match=r"\[0\]\.pnr_frame: expected a finite number"):
        pnr_metrics(GT, pnr)
    negatives = {"clips": [GT["clips"][2]]}
    with pytest.raises(InputError, match="no clips with a state change"):
        pnr_metrics(negatives, [{"unique_id": "c", "pnr_frame": None}])


def test_eval_cli_one_json_line_and_one_line_errors(tmp_path, capsys):
    gt = tmp_path / "fho_val.json"
    gt.write_text(json.dumps(GT))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"unique_id": uid, "state_change": uid != "c"} for uid in "abcd"]))
    assert run(["eval", "oscc", "--gt", str(gt), "--pred", str(pred)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out) == {"accuracy": 100.0, "n": 4}
    pnr = tmp_path / "pnr.json"
    frames = {"a": 400, "b": 150, "d": 700}
    pnr.write_text(json.dumps([{"unique_id": uid, "pnr_frame": f} for uid, f in frames.items()]))
    assert run(["eval", "pnr", "--gt", str(gt), "--pred", str(pnr), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads(capsys.readouterr().out) == {"error_sec": 0.0, "n": 3}
    assert json.loads((tmp_path / "m.json").read_text()) == {"error_sec": 0.0, "n": 3}
    pred.write_text(json.dumps([{"unique_id": uid, "state_change": True} for uid in "abcdd"]))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[{")
    for argv in (
        ["eval", "oscc", "--gt", str(gt), "--pred", str(pred)],  # duplicate id
        ["eval", "oscc", "--gt", str(gt), "--pred", str(bad_json)],  # malformed file
        ["eval", "pnr", "--gt", str(bad_json), "--pred", str(pnr)],
        ["eval", "pnr", "--gt", str(gt), "--pred", str(tmp_path / "nope.json")],
        ["eval", "pnr", "--gt", str(gt), "--pred", str(pnr), "--out", str(tmp_path)],  # a folder
        ["eval", "pnr", "--gt", str(gt), "--pred", str(pnr), "--out", str(gt / "m.json")],  # under a file
    ):
        assert run(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err

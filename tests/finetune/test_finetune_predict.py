"""`egovlp finetune` and `finetune predict` from the CLI, then `egovlp eval oscc|pnr` on what they wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egovlp.cli import run
from egovlp.formats.fho import pnr_index_to_frame, read_fho


@pytest.fixture(scope="module")
def runs(fho_world, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    for task in ("oscc", "pnr"):
        args = ["finetune", task, "--ann", str(fho_world / "fho_oscc-pnr_train.json")]
        args += ["--videos", str(fho_world / "videos"), "--out", str(out / task), "--init", "random"]
        args += [
            "--model",
            str(fho_world / "micro.yaml"),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--workers",
            "0",
        ]
        assert run([*args, "--quiet"]) == 0
    return {"oscc": out / "oscc", "pnr": out / "pnr"}


def _predict_and_eval(task: str, model: Path, world: Path, tmp_path: Path, capsys) -> tuple[list, dict]:
    gt, pred = world / "fho_oscc-pnr_val.json", tmp_path / f"{task}.json"
    args = ["finetune", "predict", task, "--checkpoint", str(model), "--ann", str(gt)]
    assert (
        run([*args, "--videos", str(world / "videos"), "--out", str(pred), "--workers", "0", "--quiet"]) == 0
    )
    capsys.readouterr()
    assert run(["eval", task, "--gt", str(gt), "--pred", str(pred)]) == 0
    return json.loads(pred.read_text()), json.loads(capsys.readouterr().out)


def test_oscc_predictions_round_trip_through_eval(runs, fho_world, tmp_path, capsys):
    preds, metrics = _predict_and_eval("oscc", runs["oscc"], fho_world, tmp_path, capsys)
    clips = read_fho(fho_world / "fho_oscc-pnr_val.json")
    assert [p["unique_id"] for p in preds] == [c.unique_id for c in clips]
    assert all(isinstance(p["state_change"], bool) for p in preds)
    right = sum(p["state_change"] == c.state_change for p, c in zip(preds, clips, strict=True))
    assert metrics == {"accuracy": pytest.approx(100 * right / len(clips)), "n": len(clips)}


def test_pnr_predictions_are_mapped_parent_frames(runs, fho_world, tmp_path, capsys):
    preds, metrics = _predict_and_eval("pnr", runs["pnr"], fho_world, tmp_path, capsys)
    clips = read_fho(fho_world / "fho_oscc-pnr_val.json")
    errors = []
    for p, c in zip(preds, clips, strict=True):
        mapped = [pnr_index_to_frame(c.parent_start_frame, c.parent_end_frame, i) for i in range(16)]
        assert p["pnr_frame"] in mapped  # the official mapping of an index, not rounded
        if c.state_change:
            errors.append(abs(p["pnr_frame"] - c.parent_pnr_frame) / c.fps)
    assert metrics["n"] == len(errors) == 2
    assert metrics["error_sec"] == pytest.approx(sum(errors) / len(errors))


def test_wrong_task_and_bad_inputs_are_one_line(runs, fho_world, tmp_path, capsys):
    gt = str(fho_world / "fho_oscc-pnr_val.json")
    videos = str(fho_world / "videos")
    cases = [
        ["finetune", "predict", "pnr", "--checkpoint", str(runs["oscc"]), "--ann", gt, "--videos", videos],
        ["finetune", "predict", "oscc", "--checkpoint", str(tmp_path), "--ann", gt, "--videos", videos],
        ["finetune", "oscc", "--ann", str(tmp_path / "missing.json"), "--videos", videos],
        ["finetune", "oscc", "--ann", gt, "--videos", videos, "--num-processes", "0"],
        [
            "finetune",
            "oscc",
            "--ann",
            gt,
            "--videos",
            str(tmp_path),
            "--model",
            str(fho_world / "micro.yaml"),
        ],
    ]
    for argv in cases:
        out = tmp_path / "x" / "out.json" if argv[1] == "predict" else tmp_path / "x"
        capsys.readouterr()
        assert run([*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0], err

"""NLQ head: shapes, span decoding, a tiny overfit run, predictions the metric accepts, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_head_data import make_nlq_world, one_thread

from egovlp.config import find_config
from egovlp.errors import InputError
from egovlp.metrics import nlq_metrics
from heads.cli import main as heads_main
from heads.nlq.dataset import window_targets
from heads.nlq.model import NLQConfig, SpanLocalizer, top_spans
from heads.nlq.predict import predict_nlq
from heads.nlq.train import train_nlq

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread  # the fixture is used through pytestmark

FAST = {
    "hidden": 32,
    "num_heads": 2,
    "conv_layers": 1,
    "epochs": 30,
    "batch_size": 4,
    "lr": 3e-3,
    "dropout": 0.0,
}


def test_forward_shapes_and_masking():
    cfg = NLQConfig(hidden=32, num_heads=2)
    model = SpanLocalizer(cfg, video_dim=12, text_dim=10).eval()
    video, text = torch.randn(2, 20, 12), torch.randn(2, 5, 10)
    vmask = torch.ones(2, 20, dtype=torch.bool)
    vmask[1, 15:] = False
    tmask = torch.ones(2, 5, dtype=torch.bool)
    tmask[0, 1:] = False
    out = model(video, vmask, text, tmask)
    assert out["start"].shape == out["end"].shape == out["highlight"].shape == (2, 20)
    assert (out["start"][1, 15:] < -1e3).all() and torch.isfinite(out["start"]).all()
    # padding rows do not change the prediction of the real rows
    out2 = model(video[1:, :15], vmask[1:, :15], text[1:], tmask[1:])
    torch.testing.assert_close(out2["start"][0], out["start"][1, :15], atol=1e-5, rtol=1e-5)


def test_window_targets_and_top_spans():
    times = np.array([[k, k + 1.0] for k in range(10)])
    s, e, hl = window_targets(times, (2.5, 5.0), extension=0.0)
    assert (s, e) == (2, 4)  # 5.0 is the end of row 4 (start of row 5, exclusive)
    assert hl.tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    start = torch.full((10,), -5.0)
    end = torch.full((10,), -5.0)
    start[3], end[6] = 5.0, 5.0
    spans = top_spans(start, end, k=5, nms_iou=0.5)
    assert spans[0][:2] == (3, 6)
    assert len(spans) == 5 and all(a <= b for a, b, _ in spans)
    # NMS: no two kept spans overlap more than the threshold
    for i, (a, b, _) in enumerate(spans):
        for c, d, _ in spans[:i]:
            inter = max(0, min(b, d) - max(a, c) + 1)
            assert inter / ((b - a + 1) + (d - c + 1) - inter) <= 0.5


def test_train_overfits_and_predictions_score(tmp_path):
    w = make_nlq_world(tmp_path)
    summary = train_nlq(
        w["ann"], w["features"], w["text"], tmp_path / "run", overrides=FAST, show_progress=False
    )
    losses = summary["losses"]
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]
    pred = predict_nlq(
        tmp_path / "run", w["ann"], w["features"], w["text"], tmp_path / "pred.json", show_progress=False
    )
    assert json.loads((tmp_path / "pred.json").read_text()) == pred
    assert all(1 <= len(r["predicted_times"]) <= 5 for r in pred["results"])
    metrics = nlq_metrics(json.loads(w["ann"].read_text()), pred)
    assert metrics["evaluated"] == 9 and metrics["total"] == 12  # textless queries skipped, still counted
    assert metrics["R1@0.3"] >= 70.0  # planted events are easy: the head must find them on its train set


def test_seeded_training_is_deterministic(tmp_path):
    w = make_nlq_world(tmp_path, clips=2, rows=24)
    fast = {**FAST, "epochs": 2}
    a = train_nlq(w["ann"], w["features"], w["text"], tmp_path / "a", overrides=fast, show_progress=False)
    b = train_nlq(w["ann"], w["features"], w["text"], tmp_path / "b", overrides=fast, show_progress=False)
    assert a["losses"] == b["losses"]
    sa = load_file(tmp_path / "a" / "final" / "model.safetensors")
    sb = load_file(tmp_path / "b" / "final" / "model.safetensors")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cli_train_predict_and_errors(tmp_path, capsys):
    w = make_nlq_world(tmp_path, clips=2, rows=24)
    from egovlp import io

    stale = tmp_path / "run" / f".summary.json.{io._HOST}.4194000.x1.tmp"  # a killed run's temp (dead pid)
    stale.parent.mkdir()
    stale.write_bytes(b"half")
    rc = heads_main(
        [
            "train",
            "nlq",
            "--ann",
            str(w["ann"]),
            "--features",
            str(w["features"]),
            "--text-features",
            str(w["text"]),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--quiet",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["task"] == "nlq" and printed["precision"] == "fp32"
    assert printed["config_file"] == str(find_config("heads", "nlq"))  # the packaged one, found by name
    assert not stale.exists() and sorted(p.name for p in stale.parent.iterdir()) == [
        "checkpoints",
        "config.json",
        "final",
        "metrics.jsonl",
        "summary.json",
    ]
    rc = heads_main(
        [
            "predict",
            "nlq",
            "--checkpoint",
            str(tmp_path / "run"),
            "--ann",
            str(w["ann"]),
            "--features",
            str(w["features"]),
            "--text-features",
            str(w["text"]),
            "--out",
            str(tmp_path / "p.json"),
            "--quiet",
        ]
    )
    assert rc == 0 and (tmp_path / "p.json").is_file()
    (w["features"] / "clip1.pt").unlink()
    (w["features"] / "clip1.json").unlink()
    with pytest.raises(InputError, match="clip1"):
        heads_main(
            [
                "predict",
                "nlq",
                "--checkpoint",
                str(tmp_path / "run"),
                "--ann",
                str(w["ann"]),
                "--features",
                str(w["features"]),
                "--text-features",
                str(w["text"]),
                "--out",
                str(tmp_path / "p.json"),
                "--quiet",
            ]
        )
    with pytest.raises(InputError, match="not an egovlp head checkpoint|a 'nlq' checkpoint"):
        heads_main(
            [
                "predict",
                "mq",
                "--checkpoint",
                str(tmp_path / "run"),
                "--ann",
                str(w["ann"]),
                "--features",
                str(w["features"]),
                "--out",
                str(tmp_path / "m.json"),
                "--quiet",
            ]
        )


def test_config_rejects_unknown_and_mistyped_options(tmp_path):
    from egovlp.config import load_config_file

    bad = tmp_path / "nlq.yaml"
    bad.write_text("hiden: 64\n")
    with pytest.raises(InputError, match="unknown option.*hiden"):
        load_config_file(NLQConfig, bad)
    bad.write_text("hidden: big\n")
    with pytest.raises(InputError, match="'hidden'.*valid integer"):
        load_config_file(NLQConfig, bad)
    good = tmp_path / "ok.yaml"
    good.write_text("hidden: 64\nlr: 1\n")
    cfg = load_config_file(NLQConfig, good, {"epochs": 3, "seed": None})
    assert (cfg.hidden, cfg.lr, cfg.epochs, cfg.seed) == (64, 1.0, 3, 0)

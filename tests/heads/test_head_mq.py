"""MQ head: Soft-NMS and DIoU unit cases, label assignment, a tiny overfit run scored by the metric."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_head_data import make_mq_world, one_thread

from egovlp.metrics import mq_metrics
from heads.mq.losses import assign_targets, diou_loss_1d, point_grid
from heads.mq.model import MomentDetector, MQConfig
from heads.mq.nms import soft_nms
from heads.mq.predict import predict_mq
from heads.mq.train import train_mq

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread

FAST = {
    "hidden": 32,
    "num_heads": 2,
    "levels": 3,
    "regression_ranges": [[0, 4], [4, 8], [8, 1000]],
    "epochs": 40,
    "batch_size": 2,
    "lr": 3e-3,
    "dropout": 0.0,
    "weight_decay": 0.0,
}


def test_soft_nms_decays_overlaps_within_a_class_only():
    segs = torch.tensor([[0.0, 10.0], [1.0, 10.0], [20.0, 30.0], [0.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 0, 1])
    out_seg, out_score, out_label = soft_nms(segs, scores, labels, sigma=0.5, min_score=0.0)
    assert out_seg.shape == (4, 2)
    by_key = {
        (tuple(s.tolist()), int(lab)): float(sc)
        for s, sc, lab in zip(out_seg, out_score, out_label, strict=True)
    }
    assert by_key[((0.0, 10.0), 0)] == pytest.approx(0.9)
    assert by_key[((1.0, 10.0), 0)] == pytest.approx(0.8 * math.exp(-(0.9**2) / 0.5))  # IoU 0.9 with the top
    assert by_key[((20.0, 30.0), 0)] == pytest.approx(0.7)  # no overlap: untouched
    assert by_key[((0.0, 10.0), 1)] == pytest.approx(0.6)  # other class: never suppressed
    assert out_score.tolist() == sorted(out_score.tolist(), reverse=True)
    _, kept, _ = soft_nms(segs, scores, labels, sigma=0.5, min_score=0.5)
    assert len(kept) == 3  # the decayed duplicate falls under min_score


def test_diou_loss_values():
    same = diou_loss_1d(torch.tensor([[2.0, 3.0]]), torch.tensor([[2.0, 3.0]]))
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    # pred [-1, 1], target [0, 4] around point 0: IoU 1/5, centres 0 and 2, enclosing 5 -> 1 - 0.2 + 0.16
    val = diou_loss_1d(torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 4.0]]))
    assert val.item() == pytest.approx(0.96, abs=1e-5)


def test_label_assignment_picks_the_shortest_action_in_range():
    points = point_grid([16, 8], [1, 2], ((0, 4), (4, 100)))
    segs = torch.tensor([[2.0, 6.0], [0.0, 16.0]])
    cls_t, reg_t, matched, rel = assign_targets(points, segs, torch.tensor([0, 1]), 2, radius=1.5)
    # level 0 point 3 (centre 3.5): inside [2, 6], distances (1.5, 2.5) < 4 -> class 0
    assert matched[3] == 0 and cls_t[3].tolist() == [1.0, 0.0]
    assert reg_t[3].tolist() == pytest.approx([1.5, 2.5])
    assert rel[3] == pytest.approx(0.375)
    # level 1 point 3 (centre 7): the long action [0, 16] in range (distance 9 >= 4), within 1.5 strides of 8
    assert matched[16 + 3] == 1 and reg_t[16 + 3].tolist() == pytest.approx([3.5, 4.5])
    assert matched[0] == -1 and cls_t[0].sum() == 0  # point at 0.5 is far from both middles


@pytest.mark.parametrize("asl", [False, True])
def test_forward_shapes_and_every_parameter_gets_a_gradient(asl):
    cfg = MQConfig(hidden=32, num_heads=2, levels=3, regression_ranges=((0, 4), (4, 8), (8, 1000)), asl=asl)
    model = MomentDetector(cfg, [6, 4], num_classes=3)
    feats, mask = torch.randn(2, 16, 10), torch.ones(2, 16, dtype=torch.bool)
    mask[1, 12:] = False
    levels = model(feats, mask)
    assert [lv["cls"].shape for lv in levels] == [(2, 16, 3), (2, 8, 3), (2, 4, 3)]
    assert all((lv["reg"] >= 0).all() for lv in levels)
    from heads.mq.losses import detection_loss

    loss = detection_loss(
        model,
        levels,
        [torch.tensor([[2.0, 7.0]]), torch.tensor([[1.0, 3.0]])],
        [torch.tensor([0]), torch.tensor([2])],
        cfg,
    )
    loss["loss"].backward()
    assert torch.isfinite(loss["loss"])
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_train_overfits_and_predictions_score(tmp_path):
    w = make_mq_world(tmp_path)
    summary = train_mq(w["ann"], [str(w["features"])], tmp_path / "run", overrides=FAST, show_progress=False)
    losses = summary["losses"]
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]
    pred = predict_mq(
        tmp_path / "run", w["ann"], [str(w["features"])], tmp_path / "p.json", show_progress=False
    )
    assert json.loads((tmp_path / "p.json").read_text()) == pred
    metrics = mq_metrics(json.loads(w["ann"].read_text()), pred)
    assert metrics["mAP@0.5"] > 50.0  # planted actions on the training set


def test_asl_and_two_feature_sets_train(tmp_path):
    w = make_mq_world(tmp_path, clips=2, rows=32)
    sets = [str(w["features"]), str(w["features"])]  # the same set twice: two projections, concatenated
    fast = {**FAST, "epochs": 3, "asl": True}
    a = train_mq(w["ann"], sets, tmp_path / "a", overrides=fast, show_progress=False)
    b = train_mq(w["ann"], sets, tmp_path / "b", overrides=fast, show_progress=False)
    assert a["losses"] == b["losses"] and all(np.isfinite(a["losses"]))
    info = json.loads((tmp_path / "a" / "final" / "config.json").read_text())
    weights = load_file(tmp_path / "a" / "final" / "model.safetensors")
    assert info["set_dims"] == [16, 16] and "asl_mu" in weights
    pred = predict_mq(tmp_path / "a", w["ann"], sets, show_progress=False)
    assert set(pred["detect_results"]) == {"clip0", "clip1"}

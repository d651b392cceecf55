"""VQ2D head: anchors and box coding, peak detection, geometry, a tiny overfit run scored by the metric."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_head_data import make_vq_world, one_thread

from egovlp.metrics import vq2d_metrics
from heads.vq2d.anchors import anchor_labels, decode, encode, make_anchors
from heads.vq2d.dataset import load_clip_grid
from heads.vq2d.model import VisualQueryLocalizer, VQ2DConfig
from heads.vq2d.predict import find_peaks, predict_vq2d, response_window
from heads.vq2d.train import train_vq2d

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread

FAST = {
    "hidden": 32,
    "num_heads": 2,
    "clip_len": 12,
    "epochs": 40,
    "batch_size": 2,
    "lr": 3e-3,
    "dropout": 0.0,
    "anchor_scales": [0.33],
    "anchor_ratios": [1.0],
    "min_negatives": 16,
}


def test_anchor_coding_round_trip_and_labels():
    anchors = make_anchors(2, 3, (0.2, 0.4), (0.5, 1.0, 2.0))
    assert anchors.shape == (2 * 3 * 6, 4)
    # cell-major: the first 6 anchors are centred on cell (0, 0)
    centres = (anchors[:6, :2] + anchors[:6, 2:]) / 2
    torch.testing.assert_close(centres, torch.tensor([[1 / 6, 0.25]]).expand(6, 2))
    boxes = torch.rand(36, 2).sort(1).values.repeat(1, 2)[:, [0, 2, 1, 3]]
    torch.testing.assert_close(decode(encode(boxes, anchors), anchors), boxes, atol=1e-5, rtol=1e-5)
    box = anchors[7].clone()
    labels = anchor_labels(anchors, box, 0.5, 0.3)
    assert labels[7] == 1 and set(labels.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert (anchor_labels(anchors, None, 0.5, 0.3) == 0).all()  # background frame: all negative


def test_peak_detection_takes_the_most_recent_peak_and_grows_its_window():
    scores = np.array([0.1, 0.9, 0.2, 0.1, 0.3, 0.7, 0.8, 0.75, 0.2, 0.1])
    assert find_peaks(scores, 0.5) == [1, 6]
    first, last, peak = response_window(scores, smooth=1, peak_threshold=0.5, fraction=0.5)
    assert (first, last, peak) == (5, 7, pytest.approx(0.8))  # 0.3 < 0.4 stops the growth on the left
    # a later peak under the threshold is ignored
    scores2 = np.array([0.1, 0.9, 0.2, 0.3, 0.1])
    assert response_window(scores2, smooth=1, peak_threshold=0.5, fraction=0.5)[:2] == (1, 1)


def test_geometry_maps_boxes_back_to_pixels(tmp_path):
    w = make_vq_world(tmp_path, clips=1)
    grid = load_clip_grid(w["features"], "clip0")
    grid.geometry.update(scale=0.5, pad_left=0, pad_top=10, input_size=48)  # a letterboxed 96x96 -> 48x48
    from egovlp.formats.ego4d import VQBox

    box = VQBox(0, x=20, y=30, width=40, height=20)
    norm = grid.to_norm(box, (192, 192))  # annotation frame twice the decoded video size
    assert norm.tolist() == pytest.approx([5 / 48, 17.5 / 48, 15 / 48, 22.5 / 48])
    assert grid.to_pixels(norm[None], (192, 192))[0].tolist() == pytest.approx([20, 30, 60, 50], abs=1e-4)


@pytest.mark.parametrize("stages", [0, 1])
def test_forward_shapes_and_gradients(stages):
    cfg = VQ2DConfig(hidden=16, num_heads=2, refine_stages=stages)
    model = VisualQueryLocalizer(cfg, feature_dim=8)
    frames, query = torch.randn(2, 5, 4, 4, 8), torch.randn(2, 9, 8)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    outs = model(frames, query, mask)
    assert len(outs) == 1 + stages
    assert outs[-1]["logits"].shape == (2, 5, 16 * 12) and outs[-1]["deltas"].shape == (2, 5, 16 * 12, 4)
    sum(o["logits"][mask].sum() + o["deltas"][mask].sum() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_train_overfits_and_predictions_score(tmp_path):
    w = make_vq_world(tmp_path)
    summary = train_vq2d(w["ann"], w["features"], tmp_path / "run", overrides=FAST, show_progress=False)
    losses = summary["losses"]
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]
    pred = predict_vq2d(tmp_path / "run", w["ann"], w["features"], tmp_path / "p.json", show_progress=False)
    assert json.loads((tmp_path / "p.json").read_text()) == pred
    metrics = vq2d_metrics(json.loads(w["ann"].read_text()), pred)
    assert metrics["success"] == 100.0 and metrics["tAP25"] > 0.5  # planted objects on the training set


def test_refinement_training_is_deterministic(tmp_path):
    w = make_vq_world(tmp_path, clips=1)
    fast = {**FAST, "epochs": 2, "refine_stages": 1}
    a = train_vq2d(w["ann"], w["features"], tmp_path / "a", overrides=fast, show_progress=False)
    b = train_vq2d(w["ann"], w["features"], tmp_path / "b", overrides=fast, show_progress=False)
    assert a["losses"] == b["losses"] and all(np.isfinite(a["losses"]))

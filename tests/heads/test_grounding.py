"""The grounding head on hand-made features: it learns which cells the described object covers and
when it is present, beats the centred-box baselines, and writes EgoMask's prediction layout."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from egovlp.features import text_key
from egovlp.metrics import egomask_metrics
from egovlp.metrics.egomask import write_ground_truth
from heads.grounding.baselines import centre_box, median_box_size
from heads.grounding.dataset import CellMap, load_samples
from heads.grounding.predict import predict_grounding
from heads.grounding.train import train_grounding

ROOT = Path(__file__).resolve().parents[2]
SIDE, GRID, DIM, FRAMES = 32, 4, 8, 16  # 32 px frames, 4 x 4 cells of 8 px, 8-d cell features


def _world(folder: Path, seed: int, n_videos: int) -> None:
    """Videos of two objects (colours 0..3), each in one cell, present on about half the frames; a cell's
    feature is its object's one-hot colour plus noise, an expression's tokens the colour's one-hot."""
    rng = np.random.default_rng(seed)
    videos, tokens = [], {}
    frames = [f"{i:05d}" for i in range(FRAMES)]
    for v in range(n_videos):
        name = f"v{seed}_{v}"
        feats = rng.normal(0, 0.3, (FRAMES, GRID, GRID, DIM)).astype(np.float16)
        colours = rng.choice(4, 2, replace=False)
        cells = rng.choice(GRID * GRID, 2, replace=False)
        objects, exps = {}, {}
        for k, (colour, cell) in enumerate(zip(colours, cells, strict=True)):
            start = int(rng.integers(0, FRAMES // 2))
            present = range(start, start + FRAMES // 2)
            cy, cx = divmod(int(cell), GRID)
            masks = {}
            for i, f in enumerate(frames):
                if i in present:
                    feats[i, cy, cx, colour] += 2.0
                    m = np.zeros((SIDE, SIDE), bool)
                    m[cy * 8 : cy * 8 + 8, cx * 8 : cx * 8 + 8] = True
                    masks[f] = m
                else:
                    masks[f] = None
            objects[str(k + 1)] = {"category": f"c{colour}", "masks": masks}
            exps[str(k)] = {"exp": f"colour {colour}", "obj_id": str(k + 1)}
            tokens[text_key(name, "egomask", k)] = torch.eye(4)[[colour, colour]] * 2
        videos.append(
            {
                "video": name,
                "subset": ("short", "long")[v % 2],
                "frames": frames,
                "objects": objects,
                "expressions": exps,
            }
        )
        (folder / "grids").mkdir(parents=True, exist_ok=True)
        with h5py.File(folder / "grids" / f"{name}.h5", "w") as h5:
            h5["features"] = feats
            h5["frame_numbers"] = np.arange(FRAMES)
            h5.attrs.update(
                {
                    "original_width": SIDE,
                    "original_height": SIDE,
                    "scale": 1.0,
                    "pad_left": 0.0,
                    "pad_top": 0.0,
                    "input_size": SIDE,
                    "complete": True,
                }
            )
    write_ground_truth(folder / "gt", videos)
    (folder / "text").mkdir()
    torch.save(tokens, folder / "text" / "text_tokens.pt")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # this tiny model runs fastest on one thread, on a busy machine most of all
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    base = tmp_path_factory.mktemp("grounding")
    _world(base / "train", 0, 8)
    _world(base / "val", 1, 4)
    return base


def test_cell_map_geometry():
    geometry = {
        "original_width": 40,
        "original_height": 20,
        "scale": 0.8,
        "pad_left": 0.0,
        "pad_top": 8.0,
        "input_size": 32,
    }
    grid = type("G", (), {"geometry": geometry})()
    cells = CellMap.of(grid, 4, 4)
    mask = np.zeros((20, 40), bool)
    mask[:, :10] = True  # x < 10 px -> model x < 8: the first cell column
    cov = cells.coverage(mask)
    assert cov[:, 0].sum() > 0 and cov[:, 1:].sum() == 0
    assert cells.upsample(np.full((4, 4), 0.25)).shape == (20, 40)


def test_head_learns_and_beats_the_baselines(worlds, tmp_path, one_thread):
    train, val = worlds / "train", worlds / "val"
    summary = train_grounding(
        train / "gt",
        train / "grids",
        train / "text",
        tmp_path / "run",
        config=ROOT / "configs" / "heads" / "grounding.yaml",
        overrides={"epochs": 20, "hidden": 32, "batch_size": 4, "clip_len": 8, "dropout": 0.0},
        show_progress=False,
    )
    assert summary["expressions"] == 16 and summary["losses"][-1] < 0.5 * summary["losses"][0]
    out = predict_grounding(tmp_path / "run", val / "gt", val / "grids", val / "text", tmp_path / "pred")
    assert out["expressions"] == 8 and out["precision"] == "fp32"
    boxes = json.loads(next((tmp_path / "pred").rglob("*_boxes.json")).read_text())
    assert all(len(b) == 4 for b in boxes.values())
    head = egomask_metrics(val / "gt", tmp_path / "pred")
    samples = load_samples(val / "gt", val / "grids", val / "text", with_targets=True)
    size = median_box_size(train / "gt")
    assert size == (8, 8)
    centre_box(samples, size, tmp_path / "centre", oracle=False)
    centre_box(samples, size, tmp_path / "oracle", oracle=True)
    centre, oracle = (
        egomask_metrics(val / "gt", tmp_path / "centre"),
        egomask_metrics(val / "gt", tmp_path / "oracle"),
    )
    assert centre["T_recall"] == 100 and oracle["presence_P"] == pytest.approx(100.0)
    assert head["IoU_gold_pred"] > 40 and head["presence_F1"] > 60, head
    assert head["IoU_gold_pred"] > oracle["IoU_gold_pred"] + 30
    assert oracle["IoU_gold_pred"] >= centre["IoU_gold_pred"]  # knowing "when" never hurts

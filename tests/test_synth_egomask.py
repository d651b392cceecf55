"""The synthetic grounding split: EgoMask's layout, absences, look-alikes told apart by the action,
subsets, masks that are the rendered object's pixels, and the narrated world left byte-identical."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from egovlp.metrics import egomask_metrics
from egovlp.metrics.egomask import decode_rle, read_annotation, read_ground_truth, write_prediction
from egovlp.metrics.io import Loc
from egovlp.synth import synthesize
from egovlp.synth.egomask import make_grounding_world, render_grounding_frame, visible_masks
from egovlp.synth.render import make_background
from egovlp.synth.world import NOUNS, frame_size

ARGS = {"videos": 2, "val_videos": 1, "duration": 8.0, "short_side": 64, "seed": 5}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("egomask")
    summary = synthesize(out, render=False, egomask_videos=6, **ARGS)
    assert summary["egomask_videos"] == 6 and summary["egomask_expressions"] >= 12
    return out


def test_layout_and_world_properties(data):
    subsets, presence, texts = set(), [], []
    for split in ("train", "val"):
        root = data / "egomask" / split
        exps = read_ground_truth(root)
        assert exps, split
        for e in exps:
            subsets.add((split, e.subset))
            ann = read_annotation(root, e.video, e.obj_id)
            assert list(ann) == list(e.frames)  # every 5 fps frame annotated, null when absent
            present = [f for f, v in ann.items() if v is not None]
            presence.append(len(present) / len(e.frames))
            mask = decode_rle(ann[present[0]], Loc("x"))
            assert mask.shape == (64, 84) and mask.any()
            texts.append((e.video, e.text))
        nlq = json.loads((root / "expressions_nlq.json").read_text())
        assert sum(
            len(c["annotations"][0]["language_queries"]) for v in nlq["videos"] for c in v["clips"]
        ) == len(exps)
        assert len((root / "videos.txt").read_text().splitlines()) == len({e.video for e in exps})
    assert {s for _, s in subsets} == {"short", "medium", "long"} and {sp for sp, _ in subsets} == {
        "train",
        "val",
    }
    assert 0.1 < float(np.mean(presence)) < 0.6  # absent from most frames
    # look-alikes: same colour, shape and name in one video, told apart only by what the wearer does
    by_video: dict[str, list[str]] = {}
    for video, text in texts:
        by_video.setdefault(video, []).append(text)
    pairs = [
        t
        for ts in by_video.values()
        for t in ts
        if "leave on the table" in t
        and any(o != t and o.split(" that ")[0] == t.split(" that ")[0] for o in ts)
    ]
    assert pairs, "no look-alike pair"


def test_ground_truth_as_prediction_scores_100(data, tmp_path):
    root = data / "egomask" / "val"
    for e in read_ground_truth(root):
        ann = read_annotation(root, e.video, e.obj_id)
        write_prediction(tmp_path, e, {f: decode_rle(v, Loc(f)) for f, v in ann.items() if v is not None})
    out = egomask_metrics(root, tmp_path)
    assert out["IoU_gold_pred"] == pytest.approx(100.0) and out["J&F"] == pytest.approx(100.0)


def test_masks_are_the_rendered_object():
    plan = make_grounding_world(3, seed=2)[1]
    width, height = frame_size(96)
    bg = make_background(plan.scene, width, height)
    checked = 0
    for obj in plan.objects:
        start, end = obj.visits[0]
        t = (start + end) / 2
        mask = visible_masks(plan, t, 96)[obj.obj_id]
        assert mask is not None
        frame = render_grounding_frame(plan, t, bg).astype(float)
        inside = frame[mask].mean(0)
        rgb = np.array(NOUNS[obj.noun].rgb, float)
        # the masked pixels look like the object (shading and lighting aside), unlike the background
        assert np.abs(inside / max(inside.max(), 1) - rgb / max(rgb.max(), 1)).max() < 0.35
        checked += 1
    assert checked == len(plan.objects)


def test_narrated_world_unchanged_by_the_grounding_split(tmp_path):
    def digests(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}

    synthesize(tmp_path / "a", render=False, egomask_videos=3, **ARGS)
    synthesize(tmp_path / "b", render=False, egomask_videos=9, **ARGS)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert (tmp_path / "a" / "egomask" / "val" / "meta.json").read_bytes() != (
        tmp_path / "b" / "egomask" / "val" / "meta.json"
    ).read_bytes()

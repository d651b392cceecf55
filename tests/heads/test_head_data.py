"""Tiny made-up cached features + annotations for the head tests (the extractor's file layout).

Helpers only (imported by the other test_head_* files); pytest collects no tests here.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from egovlp.timebase import ROWS_PER_SECOND

RPS = ROWS_PER_SECOND


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; two threads on a loaded 2-core box are several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_clip_features(folder: Path, clip_uid: str, feats: np.ndarray, fmt: str = "pt") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "pt":
        torch.save(torch.from_numpy(feats.astype(np.float32)), folder / f"{clip_uid}.pt")
    else:
        np.save(folder / f"{clip_uid}.npy", feats.astype(np.float32))
    T = feats.shape[0]
    row_times = [[round(k / RPS, 6), round((k + 1) / RPS, 6)] for k in range(T)]
    meta = {
        "clip_uid": clip_uid,
        "rows_per_second": RPS,
        "num_rows": T,
        "dim": feats.shape[1],
        "row_times": row_times,
    }
    (folder / f"{clip_uid}.json").write_text(json.dumps(meta))


def make_nlq_world(
    root: Path, clips: int = 3, rows: int = 40, dim: int = 16, seed: int = 0
) -> dict[str, Path]:
    """Clips whose rows carry a planted 'event' pattern per query; each query's text is its event code.

    Returns paths: features folder, text_cls.pt, nlq.json. Query windows are the planted rows.
    """
    rng = np.random.default_rng(seed)
    feats_dir = root / "feats"
    codes = np.eye(dim, dtype=np.float32)[:4] * 3.0  # four event types
    videos, texts = [], {}
    for c in range(clips):
        clip_uid = f"clip{c}"
        feats = rng.normal(0, 0.3, size=(rows, dim)).astype(np.float32)
        queries = []
        for q, code in enumerate(codes[:3]):
            start = int(rng.integers(0, rows - 8))
            length = int(rng.integers(3, 7))
            feats[start : start + length] += code
            queries.append(
                {
                    "clip_start_sec": start / RPS,
                    "clip_end_sec": (start + length) / RPS,
                    "query": f"event {q}",
                    "template": "t",
                }
            )
            texts[f"{clip_uid}/ann{c}_{q}"] = torch.from_numpy(code.copy())
        queries.append({"clip_start_sec": 0.0, "clip_end_sec": 1.0})  # no query text: skipped, still counted
        write_clip_features(feats_dir, clip_uid, feats)
        clip = {
            "clip_uid": clip_uid,
            "clip_start_sec": 0.0,
            "clip_end_sec": rows / RPS,
            "annotations": [{"annotation_uid": f"ann{c}", "language_queries": queries}],
        }
        videos.append({"video_uid": f"video{c}", "clips": [clip]})
    torch.save(texts, feats_dir / "text_cls.pt")
    ann = root / "nlq.json"
    ann.write_text(json.dumps({"version": "1", "videos": videos}))
    return {"features": feats_dir, "text": feats_dir / "text_cls.pt", "ann": ann}


def make_mq_world(
    root: Path, clips: int = 4, rows: int = 64, dim: int = 16, seed: int = 0
) -> dict[str, Path]:
    """Clips with planted actions of 3 classes (class k adds code k to its rows)."""
    rng = np.random.default_rng(seed)
    feats_dir = root / "feats"
    codes = np.eye(dim, dtype=np.float32)[:3] * 3.0
    videos = []
    for c in range(clips):
        clip_uid = f"clip{c}"
        feats = rng.normal(0, 0.3, size=(rows, dim)).astype(np.float32)
        labels, t = [], int(rng.integers(0, 4))
        while t < rows - 10:
            k, length = int(rng.integers(0, 3)), int(rng.integers(3, 10))
            feats[t : t + length] += codes[k]
            labels.append(
                {"start_time": t / RPS, "end_time": (t + length) / RPS, "label": f"class{k}", "primary": True}
            )
            t += length + int(rng.integers(2, 8))
        write_clip_features(feats_dir, clip_uid, feats, fmt="npy")
        clip = {
            "clip_uid": clip_uid,
            "clip_start_sec": 0.0,
            "clip_end_sec": rows / RPS,
            "annotations": [{"annotator_uid": "a", "labels": labels}],
        }
        videos.append({"video_uid": f"video{c}", "clips": [clip]})
    ann = root / "moments.json"
    ann.write_text(json.dumps({"version": "1", "videos": videos}))
    return {"features": feats_dir, "ann": ann}


def make_vq_world(root: Path, clips: int = 2, frames: int = 30, grid: int = 6, dim: int = 8, seed: int = 0):
    """HDF5 frame grids where the object (a code vector) sits on some cells in its track frames."""
    rng = np.random.default_rng(seed)
    feats_dir = root / "vq"
    feats_dir.mkdir(parents=True, exist_ok=True)
    size, cell = 96, 96 // grid  # original frames are 96 x 96 pixels, no padding
    code = np.zeros(dim, dtype=np.float32)
    code[0] = 3.0
    videos = []
    for c in range(clips):
        clip_uid = f"clip{c}"
        x = rng.normal(0, 0.3, size=(frames, grid, grid, dim)).astype(np.float32)
        gx, gy = int(rng.integers(0, grid - 2)), int(rng.integers(0, grid - 2))
        first, length = int(rng.integers(2, frames - 14)), 6
        track = list(range(first, first + length))
        crop_frame = frames - 2
        for f in [*track, crop_frame]:
            x[f, gy : gy + 2, gx : gx + 2] += code
        with h5py.File(feats_dir / f"{clip_uid}.h5", "w") as h5:
            h5.create_dataset("features", data=x.astype(np.float16))
            h5.create_dataset("frame_numbers", data=np.arange(frames))
            h5.attrs.update(
                {
                    "original_width": size,
                    "original_height": size,
                    "scale": 1.0,
                    "pad_left": 0,
                    "pad_top": 0,
                    "input_size": size,
                }
            )
        box = {"x": gx * cell, "y": gy * cell, "width": 2 * cell, "height": 2 * cell}
        qs = {
            "is_valid": True,
            "query_frame": first + length + 3,
            "object_title": "thing",
            "visual_crop": {
                "frame_number": crop_frame,
                **box,
                "original_width": size,
                "original_height": size,
            },
            "response_track": [{"frame_number": f, **box} for f in track],
        }
        clip = {
            "clip_uid": clip_uid,
            "clip_fps": 5.0,
            "annotations": [{"query_sets": {"1": qs, "2": {"is_valid": False}}}],
        }
        videos.append({"video_uid": f"video{c}", "clips": [clip]})
    ann = root / "vq.json"
    ann.write_text(json.dumps({"version": "1", "videos": videos}))
    return {"features": feats_dir, "ann": ann}

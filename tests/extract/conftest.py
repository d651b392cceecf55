"""Fixtures for the extractor tests: a micro model on disk and small videos whose frames encode their index."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

import egovlp
from egovlp.config import ModelConfig, TextTowerConfig, VideoTowerConfig


def colour_of(i: int) -> tuple[int, int, int]:
    """Frame i is one flat colour: red and green hold the index's low and high 4 bits."""
    return 8 + 16 * (i % 16), 8 + 16 * (i // 16), 128


def index_of(frame: np.ndarray) -> int:
    """Inverse of colour_of for a decoded (lossy) frame [..., 3]."""
    r, g = (float(frame[..., c].mean()) for c in (0, 1))
    return int(round((r - 8) / 16)) + 16 * int(round((g - 8) / 16))


def write_index_video(path: Path, num_frames: int, fps: int = 30, size: tuple[int, int] = (48, 32)) -> Path:
    """An H.264 mp4 of `num_frames` flat frames, frame i coloured by colour_of(i); at most 256 frames."""
    assert num_frames <= 256
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "0", "g": "30"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            img = np.empty((height, width, 3), np.uint8)
            img[:] = colour_of(i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_nlq(path: Path, clips: list[dict]) -> Path:
    """A minimal NLQ file: clips = [{video_uid, clip_uid, video_start_sec, video_end_sec, queries: [str|None]}]."""
    videos: dict[str, list] = {}
    for c in clips:
        queries = [
            {"clip_start_sec": 0.0, "clip_end_sec": 1.0, "query": q} for q in c.get("queries", ["what?"])
        ]
        videos.setdefault(c["video_uid"], []).append(
            {
                "clip_uid": c["clip_uid"],
                "video_start_sec": c["video_start_sec"],
                "video_end_sec": c["video_end_sec"],
                "annotations": [{"annotation_uid": f"ann-{c['clip_uid']}", "language_queries": queries}],
            }
        )
    doc = {"videos": [{"video_uid": v, "clips": cl} for v, cl in videos.items()]}
    path.write_text(json.dumps(doc))
    return path


def micro_model_config() -> ModelConfig:
    return ModelConfig(
        video=VideoTowerConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_frames=4),
        text=TextTowerConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=64),
        projection_dim=16,
        name="micro",
    )


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("micro_model")
    egovlp.create_model(micro_model_config()).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def micro_model(micro_model_dir):
    return egovlp.load_model(str(micro_model_dir))


@pytest.fixture(scope="session")
def index_videos(tmp_path_factory) -> Path:
    """videos/vid30.mp4 (30 fps, 150 frames = 5 s) and videos/vid25.mp4 (25 fps, 100 frames = 4 s)."""
    root = tmp_path_factory.mktemp("index_videos")
    write_index_video(root / "vid30.mp4", 150, 30)
    write_index_video(root / "vid25.mp4", 100, 25)
    return root

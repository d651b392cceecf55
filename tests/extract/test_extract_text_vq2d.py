"""Text features (keys, equality with encode_text) and VQ2D grids (HDF5 layout, geometry, values)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import torch
from conftest import write_nlq

from egovlp.transforms import IMAGENET_MEAN
from egovlp.video import read_frames
from extract.cli import main
from extract.reader import letterbox_frames, letterbox_geometry, normalize


def test_text_features_keys_and_values(tmp_path, micro_model_dir, micro_model):
    first = {"video_uid": "v", "clip_uid": "c1", "video_start_sec": 0, "video_end_sec": 4}
    second = {"video_uid": "v", "clip_uid": "c2", "video_start_sec": 4, "video_end_sec": 8}
    clips = [first | {"queries": ["where is the cup?", None]}, second | {"queries": ["who did I talk to"]}]
    nlq = write_nlq(tmp_path / "nlq.json", clips)
    out = tmp_path / "out"
    args = ["--model", str(micro_model_dir), "--preset", "text", "--input", str(nlq), "--out", str(out)]
    assert main([*args, "--text-tokens", "--no-progress"]) == 0
    cls = torch.load(out / "text_cls.pt", weights_only=True)
    assert list(cls) == ["c1/ann-c1_0", "c2/ann-c2_0"]  # the query without text is skipped
    expected = micro_model.encode_text(["where is the cup?", "who did I talk to"])
    torch.testing.assert_close(torch.stack(list(cls.values())), expected, atol=1e-5, rtol=1e-5)
    tokens = torch.load(out / "text_tokens.pt", weights_only=True)
    want = micro_model.encode_text_tokens(["where is the cup?"])[0]
    assert tokens["c1/ann-c1_0"].shape == want.shape and want.shape[1] == 16
    meta = json.loads((out / "text_cls.json").read_text())
    assert meta["skipped_without_text"] == ["c1/ann-c1_1"]
    assert meta["config_hash"] == micro_model.cfg.config_hash() and meta["precision"] == "fp32"
    assert main([*args, "--text-tokens", "--no-progress"]) == 0  # rerun: complete outputs are kept


def test_vq2d_grids(tmp_path, index_videos, micro_model_dir, micro_model):
    clip = {"clip_uid": "vqclip", "clip_fps": 5.0, "video_start_sec": 1.0, "video_end_sec": 3.0}
    vq = {"videos": [{"video_uid": "vid30", "clips": [clip | {"annotations": []}]}]}
    (tmp_path / "vq.json").write_text(json.dumps(vq))
    out = tmp_path / "out"
    args = ["--model", str(micro_model_dir), "--preset", "vq2d", "--input", str(tmp_path / "vq.json")]
    args += ["--videos", str(index_videos), "--out", str(out), "--no-progress", "--workers", "0"]
    assert main(args) == 0
    with h5py.File(out / "vqclip.h5", "r") as f:
        feats = f["features"]
        assert feats.shape == (10, 4, 4, 32) and feats.dtype == np.float16  # 2 s at 5 fps, 32/8 patches
        assert feats.chunks == (1, 4, 4, 32)
        assert f["frame_numbers"][:].tolist() == list(range(10))
        assert f["frame_indices"][:].tolist() == [30 + 6 * n for n in range(10)]
        attrs = dict(f.attrs)
        grid = torch.from_numpy(feats[3].astype(np.float32))
    assert attrs["complete"] and attrs["original_width"] == 48 and attrs["original_height"] == 32
    assert attrs["scale"] == 32 / 48 and attrs["pad_top"] == (32 - 21) // 2 and attrs["pad_left"] == 0
    assert attrs["fps"] == 5.0 and attrs["config_hash"] == micro_model.cfg.config_hash()
    assert attrs["precision"] == "fp32"
    # frame 3 of the clip is file frame 48, run as a 1-frame clip through forward_tokens
    geometry = letterbox_geometry(48, 32, 32)
    x = normalize(letterbox_frames(read_frames(index_videos / "vid30.mp4", [48]), geometry))  # [1, 3, 32, 32]
    with torch.inference_mode():
        tokens = micro_model.video_model.forward_tokens(x[None])[0, 1:]  # [16, 32]
    torch.testing.assert_close(grid, tokens.reshape(4, 4, 32), atol=2e-2, rtol=1e-2)
    # the padding is the mean colour: zero after normalization
    assert round(255 * IMAGENET_MEAN[0]) == 124 and float(x[0, :, 0].abs().max()) < 0.02

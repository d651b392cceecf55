"""Video decoding (both backends), sampling times, chunked Ego4D videos, and the B.3 transforms."""

from __future__ import annotations

import random
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from egovlp import video as V
from egovlp import video_backends as B
from egovlp.errors import VideoReadError
from egovlp.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    load_clip,
    random_resized_crop_params,
    train_transform,
)

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"


def make_video(path: Path, n: int, fps: int = 30, w: int = 64, h: int = 48, first: int = 0, **opts) -> Path:
    """An mp4 whose frame i has a flat colour encoding the id first + i (see `frame_ids`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=opts) as container:
        stream = container.add_stream(CODEC, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(first, first + n):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (i % 30) * 8
            img[..., 1] = (i // 30) * 8
            img[..., 2] = 128
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_ids(frames: np.ndarray) -> list[int]:
    """Decode the id of each [H, W, 3] frame from its central colour (codec error is < 4 levels)."""
    h, w = frames.shape[1:3]
    px = frames[:, h // 2, w // 2].astype(float)
    return [int(round(r / 8) + 30 * round(g / 8)) for r, g in px[:, :2]]


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("v") / "clip.mp4", 75)  # 2.5 s at 30 fps


@pytest.fixture(params=V.available_backends())
def backend(request, monkeypatch) -> str:
    monkeypatch.setenv(V.BACKEND_ENV, request.param)
    return request.param


def test_pyav_always_available_and_every_backend_checked():
    backends = V.available_backends()
    assert "pyav" in backends and set(backends) <= set(V.BACKENDS)
    assert backends[: len(V.DEFAULT_ORDER)] == [b for b in V.DEFAULT_ORDER if b in backends]
    for name in backends:
        assert V.check_backend(name) is None, name
    assert "not installed" in V.check_backend("opencv")


def test_no_decoding_at_import():
    import subprocess
    import sys

    code = "import egovlp.video, sys; print(sorted(m for m in ('av', 'decord', 'torchcodec') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # no backend is even imported until a file is read


def test_video_info(clip_path, backend):
    info = V.video_info(clip_path)
    assert (info.fps, info.num_frames, info.width, info.height) == (30.0, 75, 64, 48)
    assert info.duration == pytest.approx(2.5, abs=0.05)
    assert info.path == str(clip_path)


def test_read_frames_order_repeats_and_clamp(clip_path, backend):
    frames = V.read_frames(clip_path, [74, 0, 10, 10, 200, 3, -5])
    assert frames.shape == (7, 48, 64, 3) and frames.dtype == np.uint8
    assert frame_ids(frames) == [74, 0, 10, 10, 74, 3, 0]


def test_read_frames_at_timestamps(clip_path, backend):
    frames = V.read_frames_at(clip_path, [0.0, 1.0, 0.51, 2.49, 99.0])
    assert frame_ids(frames) == [0, 30, 15, 74, 74]


def test_short_side_resize_keeps_aspect(clip_path, backend, tmp_path):
    frames = V.read_frames(clip_path, [5, 6], short_side=24)
    assert frames.shape == (2, 24, 32, 3)
    assert frame_ids(frames) == [5, 6]
    # (decord 0.6 cannot decode frames 48 px wide: the auto mode falls back to PyAV for those)
    portrait = make_video(tmp_path / "portrait.mp4", 4, w=64, h=96)
    assert V.read_frames(portrait, [1], short_side=32).shape == (1, 48, 32, 3)


def test_far_apart_frames_seek_correctly(tmp_path, backend):
    path = make_video(tmp_path / "long.mp4", 700)  # gaps > the sequential-decode limit: seeks
    wanted = [650, 5, 300, 301, 699, 260, 259, 0]
    assert frame_ids(V.read_frames(path, wanted)) == wanted


@pytest.mark.parametrize("kind", ["missing", "zero", "text", "truncated", "audio", "directory"])
def test_bad_files_raise_video_read_error(tmp_path, clip_path, backend, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "zero":
        path.touch()
    elif kind == "text":
        path.write_text("this is not a video\n" * 20)
    elif kind == "truncated":
        data = clip_path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # index (moov) is at the end: gone
    elif kind == "audio":
        with av.open(str(path), "w") as container:
            stream = container.add_stream("aac", rate=22050)
            for i in range(10):
                frame = av.AudioFrame.from_ndarray(
                    np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = 22050, i * 1024
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(VideoReadError) as err:
        V.read_frames(path, [0, 1])
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    with pytest.raises(VideoReadError):
        V.video_info(path)


def test_truncated_tail_with_index_first(tmp_path, backend):
    # faststart puts the index first: the header promises 120 frames, the data stops half-way
    good = make_video(tmp_path / "fs.mp4", 120, movflags="+faststart")
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match="cut.mp4"):
        V.read_frames(cut, [0, 110])


def test_decord_failure_falls_back_to_pyav(clip_path, monkeypatch):
    monkeypatch.delenv(V.BACKEND_ENV, raising=False)
    monkeypatch.setattr(V, "DEFAULT_ORDER", ("decord", "pyav"))
    monkeypatch.setattr(V, "available_backends", lambda: ["decord", "pyav"])

    def broken(path, pick):
        raise RuntimeError("decord cannot open this")

    monkeypatch.setattr(B, "_decord_decode", broken)
    assert frame_ids(V.read_frames(clip_path, [7, 8])) == [7, 8]
    monkeypatch.setenv(V.BACKEND_ENV, "decord")  # forced: no fallback
    monkeypatch.setattr(B, "importable", lambda name: True)
    with pytest.raises(VideoReadError, match="decord cannot open this"):
        V.read_frames(clip_path, [7])


def test_unknown_backend_env(clip_path, monkeypatch):
    monkeypatch.setenv(V.BACKEND_ENV, "opencv")
    with pytest.raises(VideoReadError, match="choose pyav, decord, torchcodec"):
        V.read_frames(clip_path, [0])


def test_clip_sample_times():
    assert V.clip_sample_times(0.0, 4.0, 4) == [0.5, 1.5, 2.5, 3.5]
    assert V.clip_sample_times(3.0, 3.0, 3) == [3.0, 3.0, 3.0]
    assert V.clip_sample_times(5.0, 2.0, 2) == [5.0, 5.0]
    rng = random.Random(0)
    times = V.clip_sample_times(10.0, 14.0, 4, "random", rng)
    assert all(10.0 + k <= t < 11.0 + k for k, t in enumerate(times))
    assert times != V.clip_sample_times(10.0, 14.0, 4)
    assert times == V.clip_sample_times(10.0, 14.0, 4, "random", random.Random(0))
    with pytest.raises(ValueError):
        V.clip_sample_times(0.0, 1.0, 4, "random")


def test_ego4d_chunks_across_a_boundary(tmp_path, backend):
    # 1 fps keeps the 600 s chunk small: chunk 0 holds seconds 0..599, chunk 1 seconds 600..659
    root = tmp_path / "videos"
    make_video(root / "vid" / "0.mp4", 600, fps=1)
    make_video(root / "vid" / "1.mp4", 60, fps=1, first=600)
    times = V.clip_sample_times(597.0, 603.0, 4)  # 597.75, 599.25, 600.75, 602.25
    frames = V.read_ego4d_frames(root, "vid", times, short_side=24)
    assert frames.shape == (4, 24, 32, 3)
    assert frame_ids(frames) == [598, 599, 601, 602]
    # a time at the very end of the last chunk clamps to its last frame
    assert frame_ids(V.read_ego4d_frames(root, "vid", [1200.0])) == [659]
    # a whole file wins over chunks
    make_video(root / "vid.mp4", 10, fps=1, first=100)
    assert frame_ids(V.read_ego4d_frames(root, "vid", [2.0])) == [102]
    with pytest.raises(VideoReadError, match="nope"):
        V.read_ego4d_frames(root, "nope", [0.0])


def _norm(value: float, channel: int) -> float:
    return (value / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]


def test_eval_transform_shape_and_values():
    frames = np.zeros((3, 48, 64, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 200, 100, 0
    out = eval_transform(frames, size=32)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    for c, value in enumerate((200, 100, 0)):
        assert torch.allclose(out[:, c], torch.full_like(out[:, c], _norm(value, c)), atol=1e-4)
    assert eval_transform(torch.from_numpy(frames)).shape == (3, 3, 224, 224)
    with pytest.raises(ValueError):
        eval_transform(np.zeros((3, 3, 48, 64), np.uint8))


def test_eval_transform_center_crops():
    # left third red, right third blue: the central square crop keeps both only at its edges
    frames = np.zeros((1, 100, 300, 3), np.uint8)
    frames[:, :, :100, 0] = 255
    frames[:, :, 200:, 2] = 255
    out = eval_transform(frames, size=30)
    middle = out[0, :, 15, 15]
    assert middle[0] == pytest.approx(_norm(0, 0), abs=1e-4)  # the centre is neither red nor blue
    assert middle[2] == pytest.approx(_norm(0, 2), abs=1e-4)


def test_train_transform_same_crop_for_all_frames():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    frames = np.stack([img] * 4)
    outs = [train_transform(frames, 32, torch.Generator().manual_seed(s)) for s in range(6)]
    for out in outs:
        assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
        assert all(torch.equal(out[0], out[k]) for k in range(1, 4))  # one crop / flip per clip
        lo = min(_norm(0, c) for c in range(3))
        hi = max(_norm(255, c) for c in range(3))
        assert lo - 1e-3 <= float(out.min()) and float(out.max()) <= hi + 1e-3
    assert len({tuple(o[0, 0, 0, :4].tolist()) for o in outs}) > 1  # crops differ between seeds
    again = train_transform(frames, 32, torch.Generator().manual_seed(3))
    assert torch.equal(again, outs[3])


def test_random_resized_crop_params_bounds():
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        top, left, h, w = random_resized_crop_params(120, 160, gen)
        assert 0 <= top and top + h <= 120 and 0 <= left and left + w <= 160
        assert 0.5 * 120 * 160 * 0.97 <= h * w <= 120 * 160
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_train_flip_happens_about_half_the_time():
    frames = np.zeros((1, 40, 40, 3), np.uint8)
    frames[:, :, :20, 0] = 255  # left half red
    flips = 0
    for seed in range(40):
        out = train_transform(frames, 16, torch.Generator().manual_seed(seed))
        flips += bool(out[0, 0, 8, 15] > out[0, 0, 8, 0])  # red moved to the right
    assert 8 <= flips <= 32


def test_load_clip_eval_and_train(clip_path):
    clip = load_clip(clip_path, 0.0, 2.0, num_frames=4, size=32)
    assert clip.shape == (4, 3, 32, 32)
    # eval takes interval middles 0.25, 0.75, 1.25, 1.75 s = frames 8, 22, 38, 52 (round half even)
    frames = V.read_frames(clip_path, [round(t * 30) for t in (0.25, 0.75, 1.25, 1.75)])
    assert torch.allclose(clip, eval_transform(frames, 32))
    a = load_clip(clip_path, 0.0, 2.0, 4, train=True, size=32, rng=random.Random(5))
    b = load_clip(clip_path, 0.0, 2.0, 4, train=True, size=32, rng=random.Random(5))
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b)

"""The decoder backends behind `egovlp.video`: one function per backend that opens a file once, learns
its fps and frame count, asks `pick` for the frame indices wanted and returns them decoded.

- PyAV (FFmpeg bundled in its wheel; always installed): one forward pass over the sorted indices,
  seeking only across long gaps.
- decord: `get_batch` on a `VideoReader`.
- torchcodec: `get_frames_at` on a `VideoDecoder` in exact seek mode (needs the system's FFmpeg
  shared libraries; optional).

`importable(name)` tells whether a backend loads; `check_backend(name)` is the explicit install check.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from egovlp.errors import VideoReadError

logger = logging.getLogger(__name__)

BACKENDS = ("pyav", "decord", "torchcodec")
# Sequential decoding through a gap is cheaper than a seek (which restarts at the previous keyframe)
# unless the gap is long; x264's default keyframe interval is 250 frames.
_SEEK_GAP_FRAMES = 250


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    num_frames: int
    duration: float
    width: int
    height: int


Pick = Callable[[VideoInfo], list[int]]
Decoded = tuple[VideoInfo, list[int], dict[int, np.ndarray]]


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    # decord prefixes its messages with "[hh:mm:ss] /source/file.cc:123: "
    return re.sub(r"^\[[\d:]+\] \S+:\d+: (Error: )?", "", text)[:300]


@functools.cache
def importable(name: str) -> bool:
    """Whether a backend's module loads (torchcodec also needs FFmpeg's shared libraries)."""
    if name == "pyav":
        return True
    if importlib.util.find_spec(name) is None:
        return False
    try:
        if name == "decord":
            import decord

            decord.logging.set_level(decord.logging.QUIET)  # our errors carry FFmpeg's message
        else:
            from torchcodec.decoders import VideoDecoder  # noqa: F401 - loads libtorchcodec + FFmpeg
    except Exception as err:  # noqa: BLE001 - a broken binary wheel raises all sorts of things
        logger.debug("%s does not load: %s", name, err)
        return False
    return True


def check_backend(name: str) -> str | None:
    """Explicit install check: decode a small mp4 written here with `name`; None when it works,
    else what went wrong. (Not run implicitly; `bench_decode.py` and the tests call it.)"""
    import av

    if name not in BACKENDS or not importable(name):
        return f"{name}: not installed or does not load"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "check.mp4")
        with av.open(path, "w") as container:
            stream = container.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for i in range(6):
                img = np.full((32, 32, 3), 40 * i, np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        try:
            _, _, got = DECODERS[name](path, lambda info: [0, 5])
        except Exception as err:  # noqa: BLE001
            return f"{name}: {one_line(err)}"
    means = [int(got[i].mean()) for i in (0, 5)]
    return None if abs(means[0]) < 12 and abs(means[1] - 200) < 12 else f"{name}: wrong pixels {means}"


# --------------------------------------------------------------------------------------------
# PyAV


def _pyav_open(path: str):
    import av

    try:
        container = av.open(path)
    except Exception as err:  # noqa: BLE001 - PyAV raises FFmpegError subclasses, OSError, ...
        raise VideoReadError(f"{path}: cannot open video ({one_line(err)})") from err
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: no video stream")
    return container


def _pyav_info(path: str, container) -> VideoInfo:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise VideoReadError(f"{path}: video stream has no frame rate")
    fps = float(rate)
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    num_frames = stream.frames or int(round(duration * fps))
    if num_frames <= 0:
        raise VideoReadError(f"{path}: video stream has no frames")
    if duration <= 0:
        duration = num_frames / fps
    ctx = stream.codec_context
    return VideoInfo(path, fps, int(num_frames), duration, int(ctx.width), int(ctx.height))


def _pyav_decode(path: str, pick: Pick | None) -> Decoded:
    with _pyav_open(path) as container:
        info = _pyav_info(path, container)
        if pick is None:
            return info, [], {}
        indices = pick(info)
        wanted = sorted(set(indices))
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            got = _pyav_frames(container, stream, wanted, info.fps)
        except Exception as err:  # noqa: BLE001 - FFmpeg decode errors on corrupt data
            raise VideoReadError(f"{path}: corrupt video data ({one_line(err)})") from err
    return info, indices, got


def _pyav_frames(container, stream, wanted: list[int], fps: float) -> dict[int, np.ndarray]:
    """Decode sorted unique indices in one forward pass, seeking only across long gaps."""
    time_base = stream.time_base
    start_pts = stream.start_time or 0
    out: dict[int, np.ndarray] = {}
    pos = 0
    while pos < len(wanted):
        if wanted[pos] > _SEEK_GAP_FRAMES:
            # lands on the keyframe at or before the target; decoding runs forward from there
            pts = start_pts + int(wanted[pos] / fps / time_base)
            container.seek(pts, stream=stream, backward=True, any_frame=False)
        prev, prev_img, idx = None, None, -1
        far = False
        for frame in container.decode(stream):
            idx = idx + 1 if frame.pts is None else round(float((frame.pts - start_pts) * time_base) * fps)
            img = None
            while pos < len(wanted) and wanted[pos] <= idx:
                if wanted[pos] == idx or prev is None:
                    img = frame.to_ndarray(format="rgb24") if img is None else img
                    out[wanted[pos]] = img
                else:  # a timestamp gap (dropped frame): the frame shown at that time is `prev`
                    prev_img = prev.to_ndarray(format="rgb24") if prev_img is None else prev_img
                    out[wanted[pos]] = prev_img
                pos += 1
            if pos >= len(wanted):
                break
            if wanted[pos] - idx > _SEEK_GAP_FRAMES:
                far = True
                break
            prev, prev_img = frame, None
        if not far:
            break  # all found, or the stream ended (the caller handles the missing tail)
    return out


# --------------------------------------------------------------------------------------------
# decord


def _decord_decode(path: str, pick: Pick | None) -> Decoded:
    # decord 0.6 fails on some files PyAV reads (e.g. frames 48 px wide: "DECORDArrayCopyFromTo: The
    # size must exactly match"); _decode then falls back to PyAV unless decord is forced
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    num_frames = len(reader)
    fps = float(reader.get_avg_fps())
    if num_frames <= 0 or fps <= 0:
        raise VideoReadError(f"{path}: video stream has no frames or no frame rate")
    if pick is None:
        height, width = reader[0].shape[:2]
        return VideoInfo(path, fps, num_frames, num_frames / fps, int(width), int(height)), [], {}
    probe = VideoInfo(path, fps, num_frames, num_frames / fps, 0, 0)
    indices = pick(probe)
    wanted = sorted(set(indices))
    batch = reader.get_batch(wanted).asnumpy()  # [K, H, W, 3]
    info = VideoInfo(path, fps, num_frames, num_frames / fps, int(batch.shape[2]), int(batch.shape[1]))
    return info, indices, {idx: batch[k] for k, idx in enumerate(wanted)}


# --------------------------------------------------------------------------------------------
# torchcodec


def _torchcodec_decode(path: str, pick: Pick | None) -> Decoded:
    from torchcodec.decoders import VideoDecoder

    try:
        # exact: frame indices come from a scan of the packets, not from the header's estimate
        decoder = VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=1, dimension_order="NHWC")
    except Exception as err:  # noqa: BLE001 - ValueError / RuntimeError from FFmpeg
        raise VideoReadError(f"{path}: cannot open video ({one_line(err)})") from err
    meta = decoder.metadata
    fps, num_frames = float(meta.average_fps or 0.0), int(meta.num_frames or 0)
    if num_frames <= 0 or fps <= 0:
        raise VideoReadError(f"{path}: video stream has no frames or no frame rate")
    info = VideoInfo(path, fps, num_frames, num_frames / fps, int(meta.width), int(meta.height))
    if pick is None:
        return info, [], {}
    indices = pick(info)
    wanted = sorted(set(indices))
    batch = decoder.get_frames_at(wanted).data.numpy()  # [K, H, W, 3] uint8
    return info, indices, {idx: batch[k] for k, idx in enumerate(wanted)}


DECODERS: dict[str, Callable[[str, Pick | None], Decoded]] = {
    "pyav": lambda path, pick: _pyav_decode(path, pick),
    "decord": lambda path, pick: _decord_decode(path, pick),
    "torchcodec": lambda path, pick: _torchcodec_decode(path, pick),
}

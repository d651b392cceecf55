"""Video decoding: frame indices or timestamps of one file -> uint8 RGB arrays.

Three backends read the same files: PyAV (FFmpeg bundled in its wheel, always installed), decord
and torchcodec (PyTorch's decoder; needs the system's FFmpeg shared libraries). The default is the
measured best of those installed (`DEFAULT_ORDER`; benchmarks/bench_decode.py, numbers in
benchmarks/RESULTS.md); `EGOVLP_VIDEO_BACKEND=pyav|decord|torchcodec` forces one. A backend that
fails on a file falls back to PyAV unless it was forced. `check_backend(name)` is an explicit install
check (it decodes a small file it writes); nothing is decoded at import or on first use.

Callers ask for a set of frames; the backend reads the sorted unique set (PyAV in one pass, seeking
only across long gaps) and hands the frames back in the order asked. Every failure (missing file,
empty file, not a video, no video stream, truncated or corrupt data) raises `VideoReadError` with a
one-line message naming the path. Ego4D-style 600 s chunking (`{root}/{video_uid}/{k}.mp4`) is
resolved by `read_ego4d_frames`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import random
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from egovlp.errors import VideoReadError

logger = logging.getLogger(__name__)

BACKEND_ENV = "EGOVLP_VIDEO_BACKEND"
BACKENDS = ("pyav", "decord", "torchcodec")
# preferred first, by measurement (benchmarks/bench_decode.py); PyAV is always there
DEFAULT_ORDER = ("pyav",)
CHUNK_SECONDS = 600.0
# Sequential decoding through a gap is cheaper than a seek (which restarts at the previous keyframe)
# unless the gap is long; x264's default keyframe interval is 250 frames.
_SEEK_GAP_FRAMES = 250
# A file whose container claims more frames than it decodes loses at most this much at its end
# before we call it truncated (container frame counts are often estimates from the duration).
_END_SLACK_SECONDS = 0.5


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    num_frames: int
    duration: float
    width: int
    height: int


# --------------------------------------------------------------------------------------------
# backend selection


@functools.cache
def _importable(name: str) -> bool:
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


def available_backends() -> list[str]:
    """Backends whose modules load here: the default order first, then the others."""
    order = [*DEFAULT_ORDER, "pyav", *BACKENDS]
    return [b for b in dict.fromkeys(order) if _importable(b)]


def check_backend(name: str) -> str | None:
    """Explicit install check: decode a small mp4 written here with `name`; None when it works,
    else what went wrong. (Not run implicitly; `bench_decode.py` and the tests call it.)"""
    import av

    if name not in BACKENDS or not _importable(name):
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
            _, _, got = _DECODERS[name](path, lambda info: [0, 5])
        except Exception as err:  # noqa: BLE001
            return f"{name}: {_one_line(err)}"
    means = [int(got[i].mean()) for i in (0, 5)]
    return None if abs(means[0]) < 12 and abs(means[1] - 200) < 12 else f"{name}: wrong pixels {means}"


def _backend_order() -> tuple[list[str], bool]:
    """(backends to try in order, forced?) from the environment."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise VideoReadError(f"{BACKEND_ENV}={forced!r}: choose {', '.join(BACKENDS)}")
        if not _importable(forced):
            raise VideoReadError(f"{BACKEND_ENV}={forced} but {forced} is not installed or does not load")
        return [forced], True
    usable = available_backends()
    return [b for b in usable if b in DEFAULT_ORDER or b == "pyav"], False


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: video file not found")
    if os.path.isdir(path):
        raise VideoReadError(f"{path}: is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: empty file (0 bytes)")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    # decord prefixes its messages with "[hh:mm:ss] /source/file.cc:123: "
    return re.sub(r"^\[[\d:]+\] \S+:\d+: (Error: )?", "", text)[:300]


def _scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side equal to short_side, aspect ratio kept."""
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def _resize(frames: np.ndarray, short_side: int | None) -> np.ndarray:
    """[F, H, W, 3] uint8 -> short side `short_side` (bilinear, antialiased), the same for both backends."""
    height, width = frames.shape[1:3]
    if short_side is None or short_side == min(width, height):
        return frames
    import torch
    from torchvision.transforms.v2 import functional as TF

    new_w, new_h = _scaled_size(width, height, short_side)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)  # [F, 3, H, W]
    x = TF.resize(x, [new_h, new_w], antialias=True)  # [F, 3, h, w] uint8
    return x.permute(0, 2, 3, 1).contiguous().numpy()


# A backend decodes one file in one open: it learns fps and frame count, asks `pick` for the
# (clamped) indices wanted, and returns (info, indices, {index: [H, W, 3] uint8}).
Pick = Callable[[VideoInfo], list[int]]
Decoded = tuple[VideoInfo, list[int], dict[int, np.ndarray]]


# --------------------------------------------------------------------------------------------
# PyAV


def _pyav_open(path: str):
    import av

    try:
        container = av.open(path)
    except Exception as err:  # noqa: BLE001 - PyAV raises FFmpegError subclasses, OSError, ...
        raise VideoReadError(f"{path}: cannot open video ({_one_line(err)})") from err
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
            raise VideoReadError(f"{path}: corrupt video data ({_one_line(err)})") from err
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
        raise VideoReadError(f"{path}: cannot open video ({_one_line(err)})") from err
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


_DECODERS: dict[str, Callable[[str, Pick | None], Decoded]] = {
    "pyav": lambda path, pick: _pyav_decode(path, pick),
    "decord": lambda path, pick: _decord_decode(path, pick),
    "torchcodec": lambda path, pick: _torchcodec_decode(path, pick),
}


# --------------------------------------------------------------------------------------------
# public API


def _decode(path: str, pick: Pick | None) -> Decoded:
    """Run the first backend that can read `path`; the PyAV fallback unless a backend is forced."""
    _check_file(path)
    backends, forced = _backend_order()
    last_error: Exception | None = None
    for name in backends:
        try:
            return _DECODERS[name](path, pick)
        except VideoReadError as err:
            last_error = err
        except Exception as err:  # noqa: BLE001 - decord raises DECORDError / RuntimeError
            last_error = VideoReadError(f"{path}: {name} cannot read video ({_one_line(err)})")
        if not forced:
            logger.debug("%s failed on %s: %s", name, path, last_error)
    assert last_error is not None
    raise last_error


def _read(path: str | os.PathLike, pick: Pick, short_side: int | None) -> np.ndarray:
    path = os.fspath(path)
    info, indices, got = _decode(path, pick)
    missing = [i for i in sorted(set(indices)) if i not in got]
    if missing:
        # The container promised more frames than the stream holds. Frame counts are often
        # estimates, so a short tail reuses the last decoded frame; anything more is truncation.
        slack = max(2, math.ceil(info.fps * _END_SLACK_SECONDS))
        tail = max(got) if got else -1
        if tail < 0 or missing[0] < tail or tail < info.num_frames - 1 - slack:
            raise VideoReadError(
                f"{path}: truncated or corrupt, frame {missing[0]} of {info.num_frames} could not be decoded"
            )
        for i in missing:
            got[i] = got[tail]
    return _resize(np.stack([got[i] for i in indices]), short_side)


def video_info(path: str | os.PathLike) -> VideoInfo:
    """fps, frame count, duration and size of the first video stream."""
    return _decode(os.fspath(path), None)[0]


def read_frames(path: str | os.PathLike, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
    """Frames at `indices` (any order, repeats allowed) -> uint8 [F, H, W, 3] RGB in that order.

    Indices past the end clamp to the last frame; `short_side` resizes keeping the aspect ratio.
    """
    if len(indices) == 0:
        raise ValueError("read_frames needs at least one frame index")

    def pick(info: VideoInfo) -> list[int]:
        return [min(max(int(i), 0), info.num_frames - 1) for i in indices]

    return _read(path, pick, short_side)


def frame_index(t: float, fps: float, num_frames: int) -> int:
    """Index of the frame shown at time t (seconds), clamped to the video."""
    return min(max(round(t * fps), 0), num_frames - 1)


def read_frames_at(
    path: str | os.PathLike, times_sec: Sequence[float], short_side: int | None = None
) -> np.ndarray:
    """Frames at timestamps (seconds) -> uint8 [F, H, W, 3]; index = round(t * fps), clamped."""
    if len(times_sec) == 0:
        raise ValueError("read_frames_at needs at least one timestamp")

    def pick(info: VideoInfo) -> list[int]:
        return [frame_index(t, info.fps, info.num_frames) for t in times_sec]

    return _read(path, pick, short_side)


def clip_sample_times(
    start: float, end: float, num_frames: int, mode: str = "middle", rng: random.Random | None = None
) -> list[float]:
    """B.5 sampling: split [start, end] into num_frames equal intervals, one time per interval.

    "middle" takes each interval's middle (eval), "random" a uniform time inside it (train, needs rng).
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if mode not in ("middle", "random"):
        raise ValueError(f"mode must be 'middle' or 'random', got {mode!r}")
    if end <= start:
        return [float(start)] * num_frames
    step = (end - start) / num_frames
    if mode == "middle":
        return [start + (k + 0.5) * step for k in range(num_frames)]
    if rng is None:
        raise ValueError("mode='random' needs an rng")
    return [start + (k + rng.random()) * step for k in range(num_frames)]


def resolve_ego4d_video(video_root: str | os.PathLike, video_uid: str) -> tuple[Path, bool]:
    """(path, chunked): `{root}/{uid}.mp4` if it exists, else the chunk folder `{root}/{uid}/`."""
    root = Path(video_root)
    whole = root / f"{video_uid}.mp4"
    if whole.is_file():
        return whole, False
    folder = root / video_uid
    if folder.is_dir():
        return folder, True
    raise VideoReadError(f"{whole}: video file not found (nor chunk folder {folder}/)")


def read_ego4d_frames(
    video_root: str | os.PathLike,
    video_uid: str,
    times_sec: Sequence[float],
    short_side: int | None = None,
) -> np.ndarray:
    """Frames of an Ego4D video at absolute times -> uint8 [F, H, W, 3], whole file or 600 s chunks.

    Chunk k = int(t // 600) holds [600k, 600(k+1)); a clip crossing a boundary reads both chunks.
    """
    path, chunked = resolve_ego4d_video(video_root, video_uid)
    if not chunked:
        return read_frames_at(path, times_sec, short_side)
    by_chunk: dict[int, list[int]] = {}
    for pos, t in enumerate(times_sec):
        by_chunk.setdefault(max(int(t // CHUNK_SECONDS), 0), []).append(pos)
    frames: list[np.ndarray | None] = [None] * len(times_sec)
    for k, positions in sorted(by_chunk.items()):
        chunk = path / f"{k}.mp4"
        if not chunk.exists() and k > 0 and (path / f"{k - 1}.mp4").exists():
            # a time at (or just past) the very end of the last chunk: clamp to that chunk's end
            k, chunk = k - 1, path / f"{k - 1}.mp4"
        local = [times_sec[p] - CHUNK_SECONDS * k for p in positions]
        got = read_frames_at(chunk, local, short_side)
        for p, img in zip(positions, got, strict=True):
            frames[p] = img
    shapes = {f.shape for f in frames if f is not None}
    if len(shapes) != 1:
        raise VideoReadError(f"{path}/: chunks have different frame sizes {sorted(shapes)}")
    return np.stack(frames)

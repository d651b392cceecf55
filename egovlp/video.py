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

import logging
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from egovlp import video_backends as decoders
from egovlp.errors import VideoReadError
from egovlp.video_backends import BACKENDS, Decoded, Pick, VideoInfo, check_backend

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "DEFAULT_ORDER",
    "VideoInfo",
    "available_backends",
    "check_backend",
    "clip_sample_times",
    "frame_index",
    "read_ego4d_frames",
    "read_frames",
    "read_frames_at",
    "resolve_ego4d_video",
    "video_info",
]

logger = logging.getLogger(__name__)

BACKEND_ENV = "EGOVLP_VIDEO_BACKEND"
# preferred first, by measurement (benchmarks/bench_decode.py); PyAV is always there
DEFAULT_ORDER = ("pyav",)
CHUNK_SECONDS = 600.0
# A file whose container claims more frames than it decodes loses at most this much at its end
# before we call it truncated (container frame counts are often estimates from the duration).
_END_SLACK_SECONDS = 0.5


# --------------------------------------------------------------------------------------------
# backend selection


def available_backends() -> list[str]:
    """Backends whose modules load here: the default order first, then the others."""
    return [b for b in dict.fromkeys((*DEFAULT_ORDER, *BACKENDS)) if decoders.importable(b)]


def _backend_order() -> tuple[list[str], bool]:
    """(backends to try in order, forced?) from the environment."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise VideoReadError(f"{BACKEND_ENV}={forced!r}: choose {', '.join(BACKENDS)}")
        if not decoders.importable(forced):
            raise VideoReadError(f"{BACKEND_ENV}={forced} but {forced} is not installed or does not load")
        return [forced], True
    # only the default order is loaded: importing the others costs a second per process (torchcodec)
    return [b for b in dict.fromkeys((*DEFAULT_ORDER, "pyav")) if decoders.importable(b)], False


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: video file not found")
    if os.path.isdir(path):
        raise VideoReadError(f"{path}: is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: empty file (0 bytes)")


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
def _decode(path: str, pick: Pick | None) -> Decoded:
    """Run the first backend that can read `path`; the PyAV fallback unless a backend is forced."""
    _check_file(path)
    backends, forced = _backend_order()
    last_error: Exception | None = None
    for name in backends:
        try:
            return decoders.DECODERS[name](path, pick)
        except VideoReadError as err:
            last_error = err
        except Exception as err:  # noqa: BLE001 - decord raises DECORDError / RuntimeError
            last_error = VideoReadError(f"{path}: {name} cannot read video ({decoders.one_line(err)})")
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

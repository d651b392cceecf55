"""Video decoding for the service in a child process with a deadline.

A hostile file (garbage bytes, a codec bomb, a container that makes FFmpeg spin) must not hang or
crash the server: each request's decoding runs in a fresh child process that sends back uint8 frames
through a pipe; past `timeout` seconds the child is killed and the request fails with DecodeTimeout.
The child only decodes (PyAV / decord, short side 256 as the eval transform's first step); the
normalizing transform runs in the parent.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from dataclasses import dataclass

import numpy as np
import torch

from egovlp.errors import InputError, VideoReadError
from egovlp.transforms import EVAL_RESIZE, eval_transform
from serve.errors import DecodeTimeout, TooLarge


@dataclass(frozen=True)
class WindowSpec:
    """What part of a video to embed: [start, end] seconds (None = whole), cut into `window`-second pieces."""

    start: float | None = None
    end: float | None = None
    window: float | None = None
    num_frames: int = 4
    max_seconds: float = 600.0
    max_windows: int = 64


def plan_windows(duration: float, spec: WindowSpec, name: str) -> list[tuple[float, float]]:
    """Clip the request to the video and cut it into windows; errors name the input."""
    start = 0.0 if spec.start is None else float(spec.start)
    end = duration if spec.end is None else float(spec.end)
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise InputError(f"{name}: need 0 <= start < end, got start={start} end={end}")
    if start >= duration:
        raise InputError(f"{name}: start {start}s is past the video's end ({duration:.2f}s)")
    end = min(end, duration)
    if end - start > spec.max_seconds:
        raise TooLarge(f"{name}: {end - start:.1f} s of video, the limit is {spec.max_seconds:g} s")
    if not spec.window:
        return [(start, end)]
    if not math.isfinite(spec.window) or spec.window <= 0:
        raise InputError(f"{name}: window must be a positive number of seconds, got {spec.window}")
    count = math.ceil((end - start) / spec.window - 1e-9)
    if count > spec.max_windows:
        raise TooLarge(f"{name}: {count} windows of {spec.window:g} s, the limit is {spec.max_windows}")
    return [(start + i * spec.window, min(start + (i + 1) * spec.window, end)) for i in range(count)]


def _child(conn, path: str, name: str, spec: WindowSpec) -> None:
    """Runs in the child: info -> windows -> frames [W * F, H, W, 3] uint8, sent through `conn`."""
    try:
        torch.set_num_threads(1)
        from egovlp.video import clip_sample_times, read_frames_at, video_info

        info = video_info(path)
        windows = plan_windows(info.duration, spec, name)
        times = [t for s, e in windows for t in clip_sample_times(s, e, spec.num_frames, "middle")]
        frames = read_frames_at(path, times, short_side=EVAL_RESIZE)
        conn.send(("ok", windows, frames))
    except TooLarge as err:
        conn.send(("too_large", str(err).replace(path, name), None))
    except VideoReadError as err:
        conn.send(("video", str(err).replace(path, name), None))
    except InputError as err:
        conn.send(("input", str(err).replace(path, name), None))
    except Exception as err:  # noqa: BLE001 - anything else from FFmpeg is still "cannot decode"
        conn.send(("video", f"{name}: cannot decode video ({type(err).__name__})", None))
    finally:
        conn.close()


def _context() -> mp.context.BaseContext:
    # fork is cheap (no re-import of torch/transformers) and the child only decodes; spawn elsewhere
    method = os.environ.get("EGOVLP_DECODE_START_METHOD") or ("fork" if os.name == "posix" else "spawn")
    return mp.get_context(method)


def decode_video(
    path: str, spec: WindowSpec, timeout: float, name: str = "input"
) -> tuple[list[tuple[float, float]], np.ndarray]:
    """Decode in a child process; returns (windows, frames uint8 [W, F, H, W, 3]). Blocking: call in a thread."""
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, path, name, spec), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise DecodeTimeout(f"{name}: decoding did not finish within {timeout:g} s")
        try:
            status, payload, frames = parent.recv()
        except EOFError:
            raise VideoReadError(f"{name}: the decoder crashed on this file") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(1.0)
        parent.close()
    if status == "too_large":
        raise TooLarge(payload)
    if status == "video":
        raise VideoReadError(payload)
    if status == "input":
        raise InputError(payload)
    windows = payload
    f = spec.num_frames
    return windows, frames.reshape(len(windows), f, *frames.shape[1:])


def frames_to_clips(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [W, F, H, W, 3] -> normalized float32 [W, F, 3, size, size] (B.3 eval transform)."""
    return torch.stack([eval_transform(window, size) for window in frames])

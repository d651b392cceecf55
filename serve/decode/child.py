"""What runs inside a decode worker process: plan the windows, decode their frames, send them back.

This module is light on purpose (numpy, PyAV/decord through `egovlp.video`; no torch, no FastAPI):
it is what the forkserver preloads, so a worker starts by a cheap fork of a clean, single-threaded
process instead of a fork of the threaded service.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from egovlp.errors import InputError, VideoReadError

EVAL_SHORT_SIDE = 256  # the eval transform's first step (egovlp.transforms.EVAL_RESIZE)


class TooManyWindows(InputError):
    """More windows or video seconds than the service's limits: a 413 in the service."""


@dataclass(frozen=True)
class WindowSpec:
    """What part of a video to embed: [start, end] seconds (None = whole), cut into `window`-second pieces."""

    start: float | None = None
    end: float | None = None
    window: float | None = None
    num_frames: int = 4
    max_seconds: float = 600.0
    max_windows: int = 64


def check_spec(spec: WindowSpec, name: str) -> None:
    """What can be refused before decoding: non-finite or inverted bounds, a non-positive window."""
    for key in ("start", "end", "window"):
        value = getattr(spec, key)
        if value is not None and not math.isfinite(value):
            raise InputError(f"{name}: {key} must be a finite number of seconds, got {value}")
    if spec.start is not None and spec.start < 0:
        raise InputError(f"{name}: start must be >= 0, got {spec.start}")
    if spec.start is not None and spec.end is not None and spec.end <= spec.start:
        raise InputError(f"{name}: need start < end, got start={spec.start} end={spec.end}")
    if spec.window is not None and spec.window <= 0:
        raise InputError(f"{name}: window must be a positive number of seconds, got {spec.window}")


def plan_windows(duration: float, spec: WindowSpec, name: str) -> list[tuple[float, float]]:
    """Clip the request to the video and cut it into windows; errors name the input."""
    check_spec(spec, name)
    start = 0.0 if spec.start is None else float(spec.start)
    end = duration if spec.end is None else float(spec.end)
    if end <= start:
        raise InputError(f"{name}: need 0 <= start < end, got start={start} end={end}")
    if start >= duration:
        raise InputError(f"{name}: start {start}s is past the video's end ({duration:.2f}s)")
    end = min(end, duration)
    if end - start > spec.max_seconds:
        raise TooManyWindows(f"{name}: {end - start:.1f} s of video, the limit is {spec.max_seconds:g} s")
    if not spec.window:
        return [(start, end)]
    pieces = (end - start) / spec.window  # may be huge for a tiny window: compare before ceil
    if pieces > spec.max_windows + 1e-9:
        raise TooManyWindows(
            f"{name}: {pieces:.3g} windows of {spec.window:g} s, the limit is {spec.max_windows}"
        )
    count = max(1, math.ceil(pieces - 1e-9))
    return [(start + i * spec.window, min(start + (i + 1) * spec.window, end)) for i in range(count)]


def run_one(conn, path: str, name: str, spec: WindowSpec) -> None:
    """In the worker: info -> windows -> frames [W * F, H, W, 3] uint8, sent through `conn`."""
    try:
        from egovlp.video import clip_sample_times, read_frames_at, video_info

        info = video_info(path)
        windows = plan_windows(info.duration, spec, name)
        times = [t for s, e in windows for t in clip_sample_times(s, e, spec.num_frames, "middle")]
        frames = read_frames_at(path, times, short_side=EVAL_SHORT_SIDE)
        conn.send(("ok", windows, frames))
    except TooManyWindows as err:
        conn.send(("too_large", str(err).replace(path, name), None))
    except VideoReadError as err:
        conn.send(("video", str(err).replace(path, name), None))
    except InputError as err:
        conn.send(("input", str(err).replace(path, name), None))
    except MemoryError:
        conn.send(("too_large", f"{name}: the decoded frames do not fit in memory", None))
    except Exception as err:  # noqa: BLE001 - anything else from FFmpeg is still "cannot decode"
        conn.send(("video", f"{name}: cannot decode video ({type(err).__name__})", None))


def serve_forever(conn) -> None:
    """A pool worker: decode (path, name, spec) jobs from `conn` until it closes or sends None."""
    from egovlp.video import available_backends

    available_backends()  # load the decoders before the first job (and before answering "ping")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the service went away: so does the worker
            return
        if job is None:
            return
        if job == "ping":
            conn.send("pong")
            continue
        path, name, spec = job
        run_one(conn, path, name, spec)

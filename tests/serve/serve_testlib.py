"""Helpers shared by the service tests: tiny mp4s, extractor-style feature files, a live server."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import torch
import uvicorn


def write_video(path: Path, seconds: float = 3.0, fps: int = 10, color: int = 0, size=(64, 48)) -> Path:
    """A small mpeg4 mp4 whose frames drift in colour (so windows differ)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            img[..., color % 3] = (20 + 7 * i) % 255
            img[: size[1] // 2, :, (color + 1) % 3] = 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_features(
    folder: Path,
    name: str,
    arr: np.ndarray,
    config_hash: str,
    fmt: str = "pt",
    video_uid: str = "vid",
    weights_hash: str | None = None,
    precision: str | None = None,
) -> None:
    """One extractor-style feature file + its sidecar (1.875 rows/s windows of 16/30 s); `precision`
    is the sidecar's record of what the extractor ran in (absent when None)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = arr.shape[0]
    step = 16 / 30
    if fmt == "pt":
        torch.save(torch.from_numpy(arr.astype(np.float32)), folder / f"{name}.pt")
    else:
        np.save(folder / f"{name}.npy", arr.astype(np.float32))
    sidecar = {
        "name": name,
        "clip_uid": name,
        "video_uid": video_uid,
        "source": f"{video_uid}.mp4",
        "video_start_sec": 100.0,
        "video_end_sec": 100.0 + t * step,
        "fps": 30.0,
        "window_frames": 16,
        "rows_per_second": 1.875,
        "num_rows": t,
        "row_times": [[i * step, (i + 1) * step] for i in range(t)],
        "dim": int(arr.shape[1]),
        "model": "micro",
        "config_hash": config_hash,
        "weights_hash": weights_hash,
        "preset": "nlq",
        "compat": False,
    }
    if precision is not None:
        sidecar["precision"] = precision
    (folder / f"{name}.json").write_text(json.dumps(sidecar))


def hanging_decoder(conn) -> None:
    """A decode worker that takes a job and never answers (a file that makes FFmpeg spin)."""
    import time

    while conn.recv() == "ping":
        conn.send("pong")
    time.sleep(60)


@contextlib.contextmanager
def live_server(app, **options) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in a thread; yields its URL once /ready is 200."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, "127.0.0.1", port, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/ready").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)

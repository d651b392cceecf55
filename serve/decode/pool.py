"""Bounded video decoding for the service: a pool of worker processes with a deadline, 429 when full.

A hostile file (garbage bytes, a codec bomb, a container that makes FFmpeg spin) must not hang or
crash the server: decoding runs in `max_workers` long-lived worker processes started from a
forkserver (a clean single-threaded process that preloaded `serve.decode.child`), never forked from
the threaded service. At most `max_workers` decodes run at once and `max_waiting` more may wait,
and the bytes of the videos in flight are bounded; beyond that `DecodePool.slot` answers 429 at once.
Past `timeout` seconds a worker is killed (and replaced) and its request fails with DecodeTimeout;
a worker that crashes is replaced too. The workers only decode; the normalizing transform runs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import queue
import threading
from collections.abc import AsyncIterator

import numpy as np
import torch

from egovlp.errors import InputError, VideoReadError
from egovlp.transforms import eval_transform
from serve.api.errors import DecodeTimeout, QueueFull, TooLarge
from serve.decode.child import WindowSpec, check_spec, plan_windows, serve_forever

__all__ = ["DecodePool", "WindowSpec", "check_spec", "frames_to_clips", "plan_windows"]
logger = logging.getLogger(__name__)
# what the forkserver imports once, so that each worker starts by a cheap fork (missing ones are
# skipped). egovlp.video resizes through torchvision, imported on first use: preloaded, so the first
# decode of each worker does not spend seconds of its timeout importing torch.
_PRELOAD = [
    "serve.decode.child",
    "egovlp.video",
    "av",
    "decord",
    "torchcodec.decoders",
    "torchvision.transforms.v2.functional",
]


def _context() -> mp.context.BaseContext:
    method = os.environ.get("EGOVLP_DECODE_START_METHOD") or "forkserver"
    if method not in mp.get_all_start_methods():
        method = "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)
    return ctx


class _Worker:
    """One decode process and the parent's end of its pipe."""

    def __init__(self, target=serve_forever) -> None:
        ctx = _context()
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=target, args=(child,), daemon=True, name="egovlp-decode")
        self.proc.start()
        child.close()

    def ping(self, timeout: float) -> None:
        """Wait until the worker answers (a worker that does not is left to its first job's deadline)."""
        with contextlib.suppress(OSError, EOFError):
            self.conn.send("ping")
            if self.conn.poll(timeout):
                self.conn.recv()

    def run(self, path: str, name: str, spec: WindowSpec, timeout: float):
        """(status, payload, frames) from the worker; DecodeTimeout / VideoReadError if it hangs / dies."""
        self.conn.send((path, name, spec))
        if not self.conn.poll(timeout):
            raise DecodeTimeout(f"{name}: decoding did not finish within {timeout:g} s")
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise VideoReadError(f"{name}: the decoder crashed on this file") from None

    def close(self, kill: bool = False) -> None:
        with contextlib.suppress(OSError, ValueError):
            if not kill:
                self.conn.send(None)
        if kill or not _joined(self.proc, 1.0):
            self.proc.kill()
            self.proc.join(1.0)
        self.conn.close()


def _joined(proc, timeout: float) -> bool:
    proc.join(timeout)
    return not proc.is_alive()


class DecodePool:
    """Admission and workers for decodes: `async with pool.slot(nbytes): await pool.decode(...)`."""

    def __init__(self, max_workers: int = 4, max_waiting: int = 8, max_bytes: int = 512 << 20, metrics=None):
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.max_workers = max_workers
        self.max_waiting = max_waiting
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.worker_target = serve_forever  # tests swap in a misbehaving worker
        self._slots: asyncio.Semaphore | None = None
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._admitted = 0
        self._bytes = 0

    @property
    def in_flight(self) -> int:
        return self._admitted

    def start(self, timeout: float = 120.0) -> None:
        """Start the workers now and wait until each answers (the first start imports the decoders)."""
        fresh = []
        while self._started < self.max_workers:
            with self._lock:
                self._started += 1
            fresh.append(_Worker(self.worker_target))
        for worker in fresh:
            worker.ping(timeout)
            self._idle.put(worker)

    def close(self) -> None:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            if worker is not None:
                worker.close()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.decodes.set(self._admitted)

    @contextlib.asynccontextmanager
    async def slot(self, nbytes: int = 0) -> AsyncIterator[None]:
        """Admit one decode of a video of `nbytes` (429 at once when full), then wait for a worker."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_workers)
        if self._admitted >= self.max_workers + self.max_waiting:
            raise QueueFull(f"video decoding is busy ({self._admitted} videos in flight); retry later")
        if self._admitted and self._bytes + nbytes > self.max_bytes:
            raise QueueFull(
                f"video decoding is busy ({self._bytes >> 20} MiB of video in flight); retry later"
            )
        self._admitted += 1
        self._bytes += nbytes
        self._gauge()
        try:
            async with self._slots:
                yield
        finally:
            self._admitted -= 1
            self._bytes -= nbytes
            self._gauge()

    def _take(self) -> _Worker:
        if self._started < self.max_workers:  # lazily, when start() was not called
            with self._lock:
                fresh = self._started < self.max_workers
                self._started += fresh
            if fresh:
                return _Worker(self.worker_target)
        worker = self._idle.get()
        assert worker is not None
        if not worker.proc.is_alive():  # died while idle (e.g. OOM-killed): a fresh one takes its place
            worker.close(kill=True)
            worker = _Worker(self.worker_target)
        return worker

    def _replace(self) -> None:
        try:
            self._idle.put(_Worker(self.worker_target))
        except OSError:  # no process now (fd or process limits): the next _take starts one lazily
            logger.exception("could not start a decode worker")
            with self._lock:
                self._started -= 1

    def decode_blocking(self, path: str, spec: WindowSpec, timeout: float, name: str):
        """(windows, frames uint8 [W, F, H, W, 3]); call inside `slot` (which bounds the workers)."""
        worker = self._take()
        healthy = False
        try:
            status, payload, frames = worker.run(path, name, spec, timeout)
            healthy = True
        finally:
            if healthy:
                self._idle.put(worker)
            else:  # hung or crashed: kill it, put a fresh one in its place
                worker.close(kill=True)
                self._replace()
        if status == "too_large":
            raise TooLarge(payload)
        if status == "video":
            raise VideoReadError(payload)
        if status == "input":
            raise InputError(payload)
        windows = payload
        return windows, frames.reshape(len(windows), spec.num_frames, *frames.shape[1:])

    async def decode(self, path: str, spec: WindowSpec, timeout: float, name: str):
        return await asyncio.to_thread(self.decode_blocking, path, spec, timeout, name)


def frames_to_clips(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [W, F, H, W, 3] -> normalized float32 [W, F, 3, size, size] (B.3 eval transform)."""
    return torch.stack([eval_transform(window, size) for window in frames])

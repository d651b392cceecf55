"""The explicit, typed state of one app (what the routes share): backend, batchers, decode pool, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import Request

from serve.api.errors import NotReady
from serve.backend import ModelBackend, load_backend
from serve.batcher import Batcher
from serve.decode.pool import DecodePool
from serve.metrics import Metrics
from serve.settings import Settings

logger = logging.getLogger(__name__)
VERSION = "0.2.0"


class ClientGone(Exception):
    """The client disconnected while its request waited: nothing to answer."""


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body is already read, so receive() only reports that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class AppState:
    """Model backend (once loaded), the two batchers, the decode pool and the metrics of one app."""

    def __init__(self, settings: Settings, loader: Callable[[], ModelBackend]) -> None:
        self.settings = settings
        self.loader = loader
        self.metrics = Metrics()
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="egovlp-model")
        self.decode_pool = DecodePool(
            settings.max_decodes, settings.max_decode_waiting, settings.max_decode_bytes, self.metrics
        )
        self.backend_: ModelBackend | None = None
        self.loaded = False  # backend there and the decode workers started
        self.load_error: str | None = None
        self.text_batcher = self._model_batcher(
            "text",
            lambda seqs: list(self.backend().embed_tokens(seqs)),
            settings.max_batch_text,
            max_items=settings.max_queue_items,
        )
        self.video_batcher = self._model_batcher(
            "video",
            lambda clips: list(self.backend().embed_video(clips)),
            settings.max_batch_video,
            max_items=max(settings.max_windows, settings.max_batch_video * settings.max_queue // 4),
        )

    def _model_batcher(
        self, name: str, embed: Callable[[list[Any]], list[Any]], max_batch: int, max_items: int
    ) -> Batcher:
        """A batcher whose batches run on the one model thread, with the settings' wait and queue bounds."""
        return Batcher(
            name,
            embed,
            self.model_thread,
            max_batch,
            self.settings.max_wait_ms,
            self.settings.max_queue,
            self.metrics,
            max_items=max_items,
        )

    # ---- lifecycle

    async def start(self) -> None:
        self.text_batcher.start()
        self.video_batcher.start()

    async def load(self) -> None:
        try:
            await asyncio.to_thread(self.decode_pool.start)
            if self.backend_ is None:
                self.backend_ = await asyncio.get_running_loop().run_in_executor(
                    self.model_thread, self.loader
                )
            self.loaded = True
            self.metrics.ready.set(1)
        except Exception as err:  # noqa: BLE001 - reported by /ready and the log
            self.load_error = " ".join(str(err).split())[:300]
            logger.error("loading failed: %s", self.load_error, exc_info=err)

    async def stop(self) -> None:
        await self.text_batcher.stop()
        await self.video_batcher.stop()
        self.decode_pool.close()
        self.model_thread.shutdown(wait=False, cancel_futures=True)

    # ---- what routes ask

    @property
    def ready(self) -> bool:
        return (
            self.backend_ is not None and self.loaded and self.text_batcher.alive and self.video_batcher.alive
        )

    def backend(self) -> ModelBackend:
        if self.backend_ is None or not self.loaded:
            raise NotReady(
                "model is loading" if self.load_error is None else f"model failed to load: {self.load_error}"
            )
        return self.backend_

    def check_ready(self) -> ModelBackend:
        backend = self.backend()
        for batcher in (self.text_batcher, self.video_batcher):
            if not batcher.alive:
                raise NotReady(f"the {batcher.name} worker is restarting")
        return backend

    async def run_batched(self, request: Request, batcher: Batcher, items: list) -> list:
        """Queue items and wait; if the client leaves first, cancel so the batcher drops them."""
        future = batcher.submit(items)
        watcher = asyncio.ensure_future(_client_gone(request))
        try:
            done, _ = await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if future in done:
            return future.result()
        future.cancel()
        raise ClientGone()

    async def search(self, vector: np.ndarray, k: int) -> list[dict[str, Any]]:
        started = time.perf_counter()
        hits = await asyncio.to_thread(self.backend().search, np.asarray(vector)[None], k)
        self.metrics.search_seconds.observe(time.perf_counter() - started)
        return hits[0]


def get_state(request: Request) -> AppState:
    """FastAPI dependency: the app's typed state."""
    return request.app.state.egovlp


def load_settings_backend(settings: Settings) -> ModelBackend:
    """The model (and index) the settings name, loaded and checked (InputError when they cannot serve)."""
    return load_backend(
        settings.model,
        settings.index,
        settings.device,
        settings.max_batch_text,
        settings.precision,
        settings.allow_foreign_index,
    )

"""Dynamic batching: concurrent requests of one modality -> batches run on a worker thread.

A request brings a list of items. `submit` rejects at once with `QueueFull` (429) when the bounded
queue already holds `max_queue` requests, instead of letting latency grow without bound. One asyncio
task per batcher waits for the first request, then keeps collecting until `max_batch` items or
`max_wait_ms` have passed, drops requests whose caller has gone (their future was cancelled), and
runs `fn(items) -> results` in the executor, so the event loop (health, metrics) stays responsive.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from serve.errors import QueueFull

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    items: list[Any]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Bounded queue + batching loop for one modality; `fn` maps a list of items to a list of results."""

    def __init__(
        self,
        name: str,
        fn: Callable[[list[Any]], Sequence[Any]],
        executor: Executor,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 64,
        metrics: Any = None,
    ) -> None:
        self.name = name
        self.fn = fn
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.metrics = metrics
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.cancel()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, items: list[Any]) -> asyncio.Future:
        """Enqueue one request's items; the future resolves to their results in order."""
        if self._task is None or self._wakeup is None:
            raise RuntimeError(f"batcher {self.name} is not started")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"{self.name} queue is full ({self.max_queue} requests waiting); retry later")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(list(items), future))
        self._gauge()
        self._wakeup.set()
        return future

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.name).set(len(self._queue))

    def _take_batch(self) -> list[_Pending]:
        """Pop requests (cancelled ones dropped) until the next would exceed max_batch items."""
        batch: list[_Pending] = []
        count = 0
        while self._queue:
            head = self._queue[0]
            if head.future.cancelled():
                self._queue.popleft()
                if self.metrics is not None:
                    self.metrics.dropped.labels(self.name).inc()
                continue
            # a request larger than max_batch still runs, alone (fn chunks it)
            if batch and count + len(head.items) > self.max_batch:
                break
            batch.append(self._queue.popleft())
            count += len(head.items)
        self._gauge()
        return batch

    def _queued_items(self) -> int:
        return sum(len(p.items) for p in self._queue if not p.future.cancelled())

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._queue:
                continue
            # give concurrent requests max_wait to join, unless the batch is already full
            deadline = loop.time() + self.max_wait
            while self._queued_items() < self.max_batch and loop.time() < deadline:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                except TimeoutError:
                    break
                self._wakeup.clear()
            while self._queue:
                batch = self._take_batch()
                if batch:
                    await self._execute(batch)

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        items = [item for pending in batch for item in pending.items]
        if self.metrics is not None:
            for pending in batch:
                self.metrics.queue_seconds.labels(self.name).observe(now - pending.enqueued)
            self.metrics.batch_size.labels(self.name).observe(len(items))
        try:
            results = await loop.run_in_executor(self.executor, self.fn, items)
        except Exception as err:  # noqa: BLE001 - handed to every waiting request
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(err)
            return
        finally:
            if self.metrics is not None:
                self.metrics.inference_seconds.labels(self.name).observe(time.perf_counter() - now)
        pos = 0
        for pending in batch:
            n = len(pending.items)
            if not pending.future.done():
                pending.future.set_result(list(results[pos : pos + n]))
            pos += n

"""Dynamic batching: concurrent requests of one modality -> batches run on a worker thread.

A request brings a list of items (texts, video windows). `submit` rejects at once with `QueueFull`
(429) when the bounded queue already holds `max_queue` requests or `max_items` items, instead of
letting latency grow without bound. One asyncio task per batcher waits for the first request, then
keeps collecting until `max_batch` items or `max_wait_ms` have passed, drops requests whose caller
has gone (their future was cancelled), and runs `fn(items) -> results` in the executor, so the event
loop (health, metrics) stays responsive.

Isolation: inputs are validated before they are submitted; if a batch still fails, each request of
it is run again on its own, so one bad item fails only its own request. Supervision: if the loop
task itself dies, the batcher reports not alive (/ready is false), fails what is queued with 503,
and restarts after `restart_delay` seconds.
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

from serve.api.errors import QueueFull, TooLarge, Unavailable

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    items: list[Any]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Bounded queue + supervised batching loop; `fn` maps a list of items to a list of results."""

    def __init__(
        self,
        name: str,
        fn: Callable[[list[Any]], Sequence[Any]],
        executor: Executor,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 64,
        metrics: Any = None,
        max_items: int | None = None,
        restart_delay: float = 0.5,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"batcher {name}: max_batch and max_queue must be >= 1")
        self.name = name
        self.fn = fn
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.max_items = max_items or max_queue * max_batch
        self.metrics = metrics
        self.restart_delay = restart_delay
        self.restarts = 0
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    # ---- lifecycle and supervision

    def start(self) -> None:
        self._stopping = False
        self._wakeup = asyncio.Event()
        self._spawn()

    def _spawn(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")
        self._task.add_done_callback(self._on_exit)

    def _on_exit(self, task: asyncio.Task) -> None:
        if self._stopping or task.cancelled():
            return
        err = task.exception()
        logger.error(
            "batcher %s died (%r); restarting in %.1f s", self.name, err, self.restart_delay, exc_info=err
        )
        self._fail_queued(Unavailable(f"the {self.name} worker restarted; retry"))
        self.restarts += 1
        if self.metrics is not None:
            self.metrics.restarts.labels(self.name).inc()
        asyncio.get_running_loop().call_later(self.restart_delay, self._restart)

    def _restart(self) -> None:
        if not self._stopping:
            self._spawn()

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - it died before; already logged by _on_exit
                pass
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.cancel()

    def _fail_queued(self, err: Exception) -> None:
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(err)
        self._gauge()

    # ---- admission

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, items: list[Any]) -> asyncio.Future:
        """Enqueue one request's items; the future resolves to their results in order."""
        if self._task is None or self._wakeup is None:
            raise Unavailable(f"batcher {self.name} is not started")
        if not self.alive:
            raise Unavailable(f"the {self.name} worker is restarting; retry")
        if len(items) > self.max_items:
            raise TooLarge(f"{len(items)} {self.name} items in one request, the limit is {self.max_items}")
        if len(self._queue) >= self.max_queue or self._queued_items() + len(items) > self.max_items:
            raise QueueFull(
                f"{self.name} queue is full ({len(self._queue)} requests, {self._queued_items()} items "
                "waiting); retry later"
            )
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

    # ---- the loop

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
                except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
                    break
                self._wakeup.clear()
            while self._queue:
                batch = self._take_batch()
                if batch:
                    await self._execute(batch)

    async def _call(self, items: list[Any]) -> Sequence[Any]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.fn, items)

    async def _execute(self, batch: list[_Pending]) -> None:
        now = time.perf_counter()
        items = [item for pending in batch for item in pending.items]
        if self.metrics is not None:
            for pending in batch:
                self.metrics.queue_seconds.labels(self.name).observe(now - pending.enqueued)
            self.metrics.batch_size.labels(self.name).observe(len(items))
        try:
            results = await self._call(items)
        except Exception as err:  # noqa: BLE001 - isolated below, or handed to the one request
            if len(batch) == 1:
                _settle(batch[0], exc=err)
            else:
                await self._one_by_one(batch, err)
            return
        finally:
            if self.metrics is not None:
                self.metrics.inference_seconds.labels(self.name).observe(time.perf_counter() - now)
        if len(results) != len(items):
            err = RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
            for pending in batch:
                _settle(pending, exc=err)
            return
        pos = 0
        for pending in batch:
            n = len(pending.items)
            _settle(pending, result=list(results[pos : pos + n]))
            pos += n

    async def _one_by_one(self, batch: list[_Pending], err: Exception) -> None:
        """A batch failed: run each request alone so only the request that fails gets the error."""
        logger.warning(
            "%s batch of %d requests failed (%s); retrying them one by one", self.name, len(batch), err
        )
        for pending in batch:
            if pending.future.done():
                continue
            try:
                _settle(pending, result=list(await self._call(pending.items)))
            except Exception as own:  # noqa: BLE001 - this request's own error
                _settle(pending, exc=own)


def _settle(pending: _Pending, result: Any = None, exc: BaseException | None = None) -> None:
    if pending.future.done():
        return
    if exc is not None:
        pending.future.set_exception(exc)
    else:
        pending.future.set_result(result)

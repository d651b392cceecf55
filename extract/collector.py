"""Model outputs of either engine -> sinks -> committed files and manifest rows, in this process.

Both engines feed model outputs back to one `Collector`, which fills each output's sink and commits
it (on a writer thread) as soon as its last row is in, so a killed run loses only the outputs in
flight and both engines write the same bytes. A chunk that arrives twice (a Ray retry) counts once.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from egovlp.validate import os_error_reason
from extract.inputs import WorkItem
from extract.manifest import ManifestRow
from extract.options import ExtractOptions
from extract.outputs import OutputSpec, make_sink
from extract.reader import Job
from extract.writer import FeatureSink, H5Sink

logger = logging.getLogger(__name__)

BAR_FORMAT = "{l_bar}{bar}| {n:.0f}/{total:.0f} video-s [{elapsed}<{remaining}{postfix}]"


def failed_row(job_or_item: Job | WorkItem, error: str, seconds: float = 0.0) -> ManifestRow:
    logger.warning("failed: %s", error)
    item = job_or_item.item if isinstance(job_or_item, Job) else job_or_item
    duration = job_or_item.duration if isinstance(job_or_item, Job) else None
    return ManifestRow(item.name, item.source, "failed", error, 0, seconds, duration)


@dataclass
class _Live:
    """One output in flight: its sink and which chunks are in."""

    sink: FeatureSink | H5Sink
    t0: float = field(default_factory=time.perf_counter)
    seen: set[int] = field(default_factory=set)  # row0 of chunks written (a retried chunk counts once)
    done: int = 0


class Collector:
    """Model outputs of either engine -> sinks -> committed files and manifest rows (this process)."""

    def __init__(self, jobs: list[Job], opts: ExtractOptions, spec: OutputSpec) -> None:
        self.jobs, self.opts, self.spec = jobs, opts, spec
        self.live: dict[int, _Live] = {}
        self.closed: set[int] = set()  # outputs committed or failed: late chunks are dropped
        self.rows: list[ManifestRow] = []
        self.commits: list[Future[ManifestRow]] = []
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="extract-writer")
        self.t_start = time.perf_counter()
        total = sum(j.duration for j in jobs)
        self.bar = tqdm(
            total=round(total, 2),
            unit="s",
            desc=f"extract {opts.preset}",
            disable=not opts.progress,
            dynamic_ncols=True,
            bar_format=BAR_FORMAT,
        )

    def _write_error(self, job: Job, err: OSError) -> str:
        return f"{job.item.name}: cannot write output in {self.opts.out} ({os_error_reason(err)})"

    def add(self, pos: int, row0: int, outputs: dict[str, np.ndarray]) -> None:
        """Rows [row0, row0 + n) of output `pos`; commits the output when its last row is in."""
        if pos in self.closed:
            return
        job = self.jobs[pos]
        try:
            live = self.live.get(pos)
            if live is None:
                live = self.live[pos] = _Live(make_sink(job, self.opts, self.spec))
            if row0 in live.seen:
                return
            live.sink.write(row0, outputs)
        except OSError as err:
            self.fail(pos, self._write_error(job, err))
            return
        n = len(next(iter(outputs.values())))
        live.seen.add(row0)
        live.done += n
        self.bar.update(job.duration * n / job.plan.num_rows)
        elapsed = time.perf_counter() - self.t_start
        self.bar.set_postfix_str(f"{self.bar.n / max(elapsed, 1e-9):.2f}x realtime", refresh=False)
        if live.done >= job.plan.num_rows:
            del self.live[pos]
            self.closed.add(pos)
            self.commits.append(self.writer.submit(self._commit, job, live))

    def fail(self, pos: int, error: str) -> None:
        if pos in self.closed:
            return
        self.closed.add(pos)
        live = self.live.pop(pos, None)
        if live is not None:
            live.sink.abort()
        self.rows.append(failed_row(self.jobs[pos], error))

    def fail_rest(self, error: str) -> None:
        """Every output not yet written or failed fails with `error` (the engine stopped)."""
        for pos, job in enumerate(self.jobs):
            if pos not in self.closed:
                self.fail(pos, f"{job.item.name}: {error}")

    def _commit(self, job: Job, live: _Live) -> ManifestRow:
        """On the writer thread: serializing and fsyncing an output overlaps the next batches."""
        try:
            live.sink.commit()
        except OSError as err:
            live.sink.abort()
            return failed_row(job, self._write_error(job, err))
        seconds = time.perf_counter() - live.t0
        return ManifestRow(
            job.item.name, job.item.source, "ok", None, job.plan.num_rows, seconds, job.duration
        )

    def finish(self) -> list[ManifestRow]:
        """Wait for the writer; outputs not finished (a stream that ended early) are aborted and failed."""
        self.fail_rest("the stream ended before all rows were computed")
        self.writer.shutdown(wait=True)
        self.bar.close()
        return self.rows + [c.result() for c in self.commits]

    def abort(self) -> None:
        for live in self.live.values():
            live.sink.abort()
        self.live.clear()
        self.writer.shutdown(wait=True)  # outputs already complete are still written
        self.bar.close()

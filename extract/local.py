"""The local engine: DataLoader worker processes decode, this process runs the model.

Decoding runs ahead in `opts.workers` processes (`DecodeStream`: each worker reads its jobs front to
back in chunks) while this process runs the model, so the slower of the two sets the pace. On a CPU
the two stages get separate cores (extract/cpus.py).
"""

from __future__ import annotations

import functools
import logging
import time

from torch.utils.data import DataLoader

from extract.collector import Collector
from extract.cpus import CpuSplit, pin_worker, pinned_model, plan_cpu_split
from extract.options import ExtractOptions, StageTimes
from extract.reader import DecodeStream, Job
from extract.stage import ModelSpec, model_step, run_chunk

logger = logging.getLogger(__name__)


def cpu_split(model, opts: ExtractOptions) -> CpuSplit | None:
    """The core split for this run: only for a model on the CPU, where both stages need cores."""
    if not opts.pin_cpus or model.device.type != "cpu":
        return None
    return plan_cpu_split(opts.workers)


def decode_loader(model, jobs: list[Job], opts: ExtractOptions, split: CpuSplit | None) -> DataLoader:
    """The reader: a DataLoader over `DecodeStream` yielding Chunks from `opts.workers` processes."""
    stream = DecodeStream(
        jobs,
        model.cfg.video.img_size,
        letterbox=opts.preset == "vq2d",
        short_side=opts.short_side,
        chunk_rows=opts.decode_chunk_rows,
        first_rows=opts.batch_size,
    )
    worker_init = functools.partial(pin_worker, split=split) if opts.workers else None
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=opts.workers,
        worker_init_fn=worker_init,
        pin_memory=model.device.type == "cuda",
        prefetch_factor=4 if opts.workers else None,
        persistent_workers=False,
    )


def run_local(
    model, spec: ModelSpec | None, jobs: list[Job], opts: ExtractOptions, collector: Collector
) -> StageTimes:
    """Decode `jobs` and run `model` (loaded here; `spec` is not needed) over them, feeding
    `collector`; returns the seconds of each stage."""
    split = cpu_split(model, opts)
    step = model_step(model, opts.preset)
    times = StageTimes()
    with pinned_model(split):
        for chunk in decode_loader(model, jobs, opts, split):
            times.decode += chunk.decode_seconds
            if chunk.error is not None:
                collector.fail(chunk.job, chunk.error)
                continue
            t0 = time.perf_counter()
            outputs = run_chunk(model, step, chunk.frames, opts.batch_size)
            times.model += time.perf_counter() - t0
            collector.add(chunk.job, chunk.row0, outputs)
    return times

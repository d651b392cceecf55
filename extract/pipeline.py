"""The run of a video preset (nlq / mq / vq2d): plan -> skip what is done -> the named engine.

This module is the top of extract/'s layers and has one job: take work items through one engine.
`extract_videos(model, items, opts, model_spec)` probes every input, checks that the output folder
keeps one precision (extract/outputs.py), skips outputs a previous run completed with the same
weights, sampling and precision, and hands the rest, longest first, to the engine `opts.engine`
names in `ENGINES`:

- `local` (extract/local.py): DataLoader worker processes decode, this process runs the model;
- `ray` (extract/ray_engine.py): a Ray Data stream, decode tasks feeding a pool of model actors.

An engine is a function `(model, model_spec, jobs, opts, collector) -> StageTimes` that feeds the
`Collector` (extract/collector.py); it is imported by name only when chosen, so neither engine (nor
Ray) is imported by the others. Layers, each importing only the ones before it (checked by
tests/extract/test_extract_layers.py): reader (inputs, sampling, reader, manifest, options) ->
stage -> writer, outputs, collector -> engines -> this dispatcher -> cli.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from egovlp.errors import InputError
from extract.collector import Collector, failed_row
from extract.inputs import WorkItem
from extract.manifest import ManifestRow
from extract.options import VIDEO_PRESETS, ExtractOptions, ExtractResult, StageTimes
from extract.outputs import OutputSpec, check_folder_precision, is_complete, recorded_precisions
from extract.reader import Job, probe
from extract.stage import ModelSpec

logger = logging.getLogger(__name__)

# engine name -> "module:function" (an `Engine`), imported when chosen
ENGINES = {
    "local": "extract.local:run_local",
    "ray": "extract.ray_engine:run_ray",
}


class Engine(Protocol):
    def __call__(
        self,
        model,
        model_spec: ModelSpec | None,
        jobs: list[Job],
        opts: ExtractOptions,
        collector: Collector,
    ) -> StageTimes: ...


def get_engine(name: str) -> Engine:
    """The engine function `name` refers to in `ENGINES`; InputError naming the flag otherwise."""
    target = ENGINES.get(name)
    if target is None:
        raise InputError(f"--engine {name!r}: choose one of {', '.join(ENGINES)}")
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def plan_jobs(items: list[WorkItem], opts: ExtractOptions) -> tuple[list[Job], list[ManifestRow]]:
    """Probe every item (threads: the work is in FFmpeg, which releases the GIL) -> jobs, failures."""

    def one(item: WorkItem) -> Job | ManifestRow:
        t0 = time.perf_counter()
        try:
            return probe(item, opts.preset, opts.compat)
        except InputError as err:  # VideoReadError included
            return failed_row(item, str(err), time.perf_counter() - t0)

    # probing is I/O: threads even when decoding runs elsewhere (Ray, where --workers is 0)
    with ThreadPoolExecutor(min(8, opts.workers or os.cpu_count() or 1)) as pool:
        results = list(pool.map(one, items))
    jobs = [r for r in results if isinstance(r, Job)]
    jobs.sort(key=lambda j: (-j.duration, j.item.name))
    return jobs, [r for r in results if isinstance(r, ManifestRow)]


def extract_videos(
    model,
    items: list[WorkItem],
    opts: ExtractOptions,
    model_spec: ModelSpec | None = None,
    recorded: dict[str, str | None] | None = None,
) -> ExtractResult:
    """Extract `items` into `opts.out` with `opts.engine`; one manifest row per item.

    `model` is the loaded model (the local engine runs it; under ray it gives the identity and sizes
    and the actors load `model_spec`). The precision recorded is `model_spec.precision` when given,
    else the model's own (`EgoVLP.precision`). `recorded`: `recorded_precisions(opts.out)` when the
    caller already read it (the CLI, which checks the folder before loading the model)."""
    if opts.preset not in VIDEO_PRESETS:
        raise InputError(f"--preset {opts.preset!r}: choose one of {', '.join(VIDEO_PRESETS)}")
    engine = get_engine(opts.engine)
    t0 = time.perf_counter()
    precision = model_spec.precision if model_spec is not None else model.precision
    if recorded is None:
        recorded = recorded_precisions(opts.out)
    check_folder_precision(opts.out, precision, recorded, opts.allow_mixed_precision)
    opts.out.mkdir(parents=True, exist_ok=True)
    spec = OutputSpec.of(model, opts.model_name, precision)
    jobs, rows = plan_jobs(items, opts)
    todo: list[Job] = []
    for job in jobs:
        if is_complete(job, opts, spec, recorded.get(job.item.name)):
            item = job.item
            rows.append(
                ManifestRow(item.name, item.source, "skipped", None, job.plan.num_rows, 0.0, job.duration)
            )
        else:
            todo.append(job)
    times = StageTimes()
    if todo:
        collector = Collector(todo, opts, spec)
        try:
            times = engine(model, model_spec, todo, opts, collector)
        except BaseException:
            collector.abort()
            raise
        rows += collector.finish()
    video_seconds = sum(j.duration for j in todo)
    wall = time.perf_counter() - t0
    return ExtractResult(rows, times.model, wall, video_seconds, times.decode, precision)

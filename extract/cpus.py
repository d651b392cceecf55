"""How the model and the decode workers share a CPU-only machine.

On a GPU the model runs on the device and the decoders have the cores to themselves. On a CPU both
stages want every core: unpinned, decord's helper thread spills each decode worker onto about 1.2
cores, so the model's threads are preempted and a step stalls at its next OpenMP barrier (measured
on 2 cores: the model 20% slower while decoding runs beside it). `cpu_split` gives each decode
worker one core of its own and the model the rest, with one torch thread per model core, so the
slower stage sets the pace instead of the sum of both (benchmarks/bench_extract.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch


def default_workers() -> int:
    """Decode processes when not given: one core left for the model, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class CpuSplit:
    model: tuple[int, ...]  # cores of the main process (the model's torch threads)
    workers: tuple[int, ...]  # one core per decode worker, by worker id


def plan_cpu_split(workers: int) -> CpuSplit | None:
    """Cores for `workers` decode workers and the model, or None when there is nothing to split
    (no workers, no affinity API, or not more cores than workers)."""
    if workers <= 0 or not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) <= workers:
        return None
    cut = len(cores) - workers
    return CpuSplit(model=tuple(cores[:cut]), workers=tuple(cores[cut:]))


@contextlib.contextmanager
def pinned_model(split: CpuSplit | None) -> Iterator[None]:
    """Inside: the main process runs on `split.model` with one torch thread per core, at most the
    thread count torch had (its default, physical cores, or the user's OMP_NUM_THREADS); restored after."""
    if split is None:
        yield
        return
    before_cores, before_threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, split.model)
    torch.set_num_threads(max(1, min(len(split.model), before_threads)))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before_cores)
        torch.set_num_threads(before_threads)


def pin_worker(worker_id: int, split: CpuSplit | None) -> None:
    """DataLoader worker_init: one torch thread, and the worker's own core when split."""
    torch.set_num_threads(1)
    if split is not None:
        os.sched_setaffinity(0, {split.workers[worker_id % len(split.workers)]})

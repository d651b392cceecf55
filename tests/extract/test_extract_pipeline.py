"""The pipeline's scheduling pieces: the chunk ramp of the decode stream and the CPU core split."""

from __future__ import annotations

import os

import pytest
import torch

from extract.cpus import CpuSplit, pin_worker, pinned_model, plan_cpu_split
from extract.inputs import WorkItem
from extract.reader import DecodeStream, probe


def test_ramped_chunks_double_up_and_keep_the_frames(index_videos):
    jobs = [probe(WorkItem(name, str(index_videos / f"{name}.mp4")), "nlq") for name in ("vid30", "vid25")]
    rows0 = jobs[0].plan.num_rows
    assert rows0 > 1 + 2 + 4  # long enough to reach full-size chunks
    plain = list(DecodeStream(jobs, size=32, chunk_rows=4))
    ramped = list(DecodeStream(jobs, size=32, chunk_rows=4, first_rows=1))
    sizes = [(c.job, c.row0, len(c.frames)) for c in ramped]
    # the first job ramps 1, 2, 4, 4, ...; the next job starts at full size
    assert [r for j, r, _ in sizes if j == 0] == [0, 1, 3, *range(7, rows0, 4)]
    assert [s for j, _, s in sizes if j == 0][:3] == [1, 2, 4]
    assert [r for j, r, _ in sizes if j == 1] == list(range(0, jobs[1].plan.num_rows, 4))
    assert sum(s for j, _, s in sizes if j == 0) == rows0 and [c.last for c in ramped if c.job == 0][-1]
    for job in (0, 1):
        a = torch.cat([c.frames for c in plain if c.job == job])
        b = torch.cat([c.frames for c in ramped if c.job == job])
        assert torch.equal(a, b)


def test_cpu_split_gives_each_worker_a_core(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    assert plan_cpu_split(1) == CpuSplit(model=(0, 1, 2), workers=(3,))
    assert plan_cpu_split(3) == CpuSplit(model=(0,), workers=(1, 2, 3))
    assert plan_cpu_split(4) is None  # no core left for the model: do not pin
    assert plan_cpu_split(0) is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity API on this platform")
def test_pinned_model_sets_and_restores_cores_and_threads():
    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    first = min(cores)
    with pinned_model(CpuSplit(model=(first,), workers=())):
        assert os.sched_getaffinity(0) == {first} and torch.get_num_threads() == 1
    assert os.sched_getaffinity(0) == cores and torch.get_num_threads() == threads
    # never more threads than torch had: the user's OMP_NUM_THREADS (or torch's default) is a cap
    torch.set_num_threads(1)
    try:
        with pinned_model(CpuSplit(model=tuple(sorted(cores)), workers=())):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity API on this platform")
def test_pin_worker_takes_its_own_core():
    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    last = max(cores)
    try:
        pin_worker(1, CpuSplit(model=(), workers=(min(cores), last)))
        assert os.sched_getaffinity(0) == {last} and torch.get_num_threads() == 1
    finally:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)

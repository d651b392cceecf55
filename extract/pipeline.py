"""The extraction worker: reader (DataLoader worker processes) -> model (batched) -> writer (atomic).

`extract_videos(model, items, opts, rank, world_size)` runs one rank's share of the work and returns
its manifest rows; the caller writes them. Decoding runs ahead in `opts.workers` processes while
the main process runs the model, so the slower of the two sets the pace. The rows of one output go
through the model in batches that start at multiples of the batch size, never mixed with another
output's rows, so an output's numbers do not depend on the rank split (1 process == N processes).
An output is written as soon as its last row is computed: a killed run loses only the outputs in flight.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from egovlp.errors import InputError
from extract.cpus import CpuSplit, pin_worker, pinned_model, plan_cpu_split
from extract.inputs import WorkItem, split_by_rank
from extract.manifest import ManifestRow
from extract.reader import DecodeStream, Job, letterbox_geometry, normalize, probe
from extract.sampling import GRID_FPS, VQ_FPS, WINDOW_FRAMES
from extract.writer import FeatureSink, H5Sink, feature_paths, features_complete, h5_complete

logger = logging.getLogger(__name__)

VIDEO_PRESETS = ("nlq", "mq", "vq2d")


@dataclass
class ExtractOptions:
    preset: str  # nlq | mq | vq2d
    out: Path
    fmt: str = "pt"  # pt | npy (nlq / mq)
    compat: bool = False
    save_768: bool = False
    batch_size: int = 32
    workers: int = 1
    short_side: int | None = None
    chunk_rows: int = 64
    pin_cpus: bool = True  # CPU device: decode workers and the model on separate cores (extract/cpus.py)
    model_name: str = "egovlp"
    progress: bool = True
    stats: dict = field(default_factory=dict)  # filled with timings for the benchmark / report


# --------------------------------------------------------------------------------------------
# the model stage


def model_step(model, preset: str) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """uint8 frames [B, F, 3, S, S] on the model's device -> named per-row outputs."""
    video = model.video_model
    grid_side = model.cfg.video.img_size // model.cfg.video.patch_size

    def step(frames: torch.Tensor) -> dict[str, torch.Tensor]:
        x = normalize(frames)  # [B, F, 3, S, S] float32
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if model.autocast_dtype is not None and x.device.type == "cuda":
                stack.enter_context(torch.autocast("cuda", dtype=model.autocast_dtype))
            if preset == "vq2d":
                tokens = video.forward_tokens(x)[:, 1:]  # [B, 1*P, D], CLS dropped (one frame per row)
                grid = tokens.reshape(len(x), grid_side, grid_side, -1)  # [B, h, w, D]
                return {"grid": grid.to(torch.float16)}
            cls = video(x)  # [B, 768] pre-projection CLS
            return {"features": model.vid_proj(cls).float(), "cls_768": cls.float()}

    return step


# --------------------------------------------------------------------------------------------
# metadata and sinks


def _meta(job: Job, opts: ExtractOptions, model) -> dict:
    item, plan = job.item, job.plan
    meta = {
        "name": item.name,
        "clip_uid": item.clip_uid,
        "video_uid": item.video_uid,
        "source": item.source,
        "video_start_sec": round(job.start, 6),
        "video_end_sec": round(job.start + job.duration, 6),
        "source_fps": job.info.fps,
        "model": opts.model_name,
        "config_hash": model.cfg.config_hash(),
        "preset": opts.preset,
        "compat": opts.compat,
        "num_rows": plan.num_rows,
    }
    if opts.preset == "vq2d":
        return meta | {"fps": VQ_FPS}
    return meta | {
        "fps": GRID_FPS,
        "window_frames": WINDOW_FRAMES,
        "rows_per_second": plan.rows_per_second,
        "frames_per_row": int(plan.indices.shape[1]),
        "dim": model.cfg.projection_dim,
        "dim_768": model.cfg.video.embed_dim if opts.save_768 else None,
        "format": opts.fmt,
        "row_times": plan.row_times.tolist(),
        "frame_indices": plan.indices.tolist(),
    }


class _Output:
    """One output in flight: its sink and how many rows are done."""

    def __init__(self, job: Job, opts: ExtractOptions, model) -> None:
        self.job = job
        self.meta = _meta(job, opts, model)
        self.t0 = time.perf_counter()
        self.done = 0
        rows = job.plan.num_rows
        if opts.preset == "vq2d":
            cfg = model.cfg.video
            side = cfg.img_size // cfg.patch_size
            geometry = letterbox_geometry(job.info.width, job.info.height, cfg.img_size)
            attrs = self.meta | geometry | {"patch_size": cfg.patch_size, "dim": cfg.embed_dim}
            self.sink = H5Sink(
                opts.out / f"{job.item.name}.h5", rows, (side, side, cfg.embed_dim), job.plan.frame_numbers,
                job.plan.indices[:, 0], attrs,
            )  # fmt: skip
        else:
            paths = feature_paths(opts.out, job.item.name, opts.fmt, opts.save_768)
            dim_768 = model.cfg.video.embed_dim if opts.save_768 else None
            self.sink = FeatureSink(paths, rows, model.cfg.projection_dim, dim_768, self.meta)


def is_complete(job: Job, opts: ExtractOptions, model) -> bool:
    meta = _meta(job, opts, model)
    if opts.preset == "vq2d":
        return h5_complete(opts.out / f"{job.item.name}.h5", job.plan.num_rows, meta)
    paths = feature_paths(opts.out, job.item.name, opts.fmt, opts.save_768)
    dim_768 = model.cfg.video.embed_dim if opts.save_768 else None
    return features_complete(paths, job.plan.num_rows, model.cfg.projection_dim, dim_768, meta)


# --------------------------------------------------------------------------------------------
# the worker


def plan_jobs(items: list[WorkItem], opts: ExtractOptions, rank: int) -> tuple[list[Job], list[ManifestRow]]:
    """Probe every item (threads: the work is in FFmpeg, which releases the GIL) -> jobs and failures."""

    def one(item: WorkItem) -> Job | ManifestRow:
        t0 = time.perf_counter()
        try:
            return probe(item, opts.preset, opts.compat)
        except InputError as err:
            return ManifestRow(
                item.name, item.source, "failed", str(err), 0, time.perf_counter() - t0, None, rank
            )

    with ThreadPoolExecutor(max(1, opts.workers)) as pool:
        results = list(pool.map(one, items))
    return [r for r in results if isinstance(r, Job)], [r for r in results if isinstance(r, ManifestRow)]


def extract_videos(
    model, items: list[WorkItem], opts: ExtractOptions, rank: int = 0, world_size: int = 1
) -> list[ManifestRow]:
    """Extract this rank's share of `items` into `opts.out`; returns one manifest row per item."""
    if opts.preset not in VIDEO_PRESETS:
        raise InputError(f"--preset {opts.preset!r}: choose one of {', '.join(VIDEO_PRESETS)}")
    opts.out.mkdir(parents=True, exist_ok=True)
    mine = split_by_rank(items, rank, world_size)
    jobs, rows = plan_jobs(mine, opts, rank)
    todo: list[Job] = []
    for job in jobs:
        if is_complete(job, opts, model):
            rows.append(
                ManifestRow(
                    job.item.name,
                    job.item.source,
                    "skipped",
                    None,
                    job.plan.num_rows,
                    0.0,
                    job.duration,
                    rank,
                )
            )
        else:
            todo.append(job)
    if todo:
        rows += _run(model, todo, opts, rank)
    return rows


def cpu_split(model, opts: ExtractOptions) -> CpuSplit | None:
    """The core split for this run: only for a model on the CPU, where both stages need cores."""
    if not opts.pin_cpus or model.device.type != "cpu":
        return None
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return plan_cpu_split(opts.workers, int(os.environ.get("LOCAL_RANK", "0")) % local_world, local_world)


def decode_loader(model, jobs: list[Job], opts: ExtractOptions, split: CpuSplit | None) -> DataLoader:
    """The reader: a DataLoader over `DecodeStream` yielding Chunks from `opts.workers` processes."""
    # chunks hold whole batches, so batch boundaries depend on the output alone
    chunk_rows = max(1, opts.chunk_rows // opts.batch_size) * opts.batch_size
    stream = DecodeStream(
        jobs, model.cfg.video.img_size, letterbox=opts.preset == "vq2d", short_side=opts.short_side,
        chunk_rows=chunk_rows, first_rows=opts.batch_size,
    )  # fmt: skip
    return DataLoader(
        stream, batch_size=None, num_workers=opts.workers,
        worker_init_fn=functools.partial(pin_worker, split=split) if opts.workers else None,
        pin_memory=model.device.type == "cuda", prefetch_factor=4 if opts.workers else None,
        persistent_workers=False,
    )  # fmt: skip


def _run(model, jobs: list[Job], opts: ExtractOptions, rank: int) -> list[ManifestRow]:
    split = cpu_split(model, opts)
    with pinned_model(split):
        return _run_pinned(model, jobs, opts, rank, split)


def _run_pinned(
    model, jobs: list[Job], opts: ExtractOptions, rank: int, split: CpuSplit | None
) -> list[ManifestRow]:
    device = model.device
    step = model_step(model, opts.preset)
    loader = decode_loader(model, jobs, opts, split)
    total = sum(j.duration for j in jobs)
    bar = tqdm(
        total=round(total, 2), unit="s", desc=f"extract {opts.preset} r{rank}", disable=not opts.progress,
        dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} video-s [{elapsed}<{remaining}{postfix}]",
    )  # fmt: skip
    live: dict[int, _Output] = {}
    rows: list[ManifestRow] = []
    writer = ThreadPoolExecutor(1, thread_name_prefix="extract-writer")
    commits: list[Future[ManifestRow]] = []
    t_start = time.perf_counter()
    model_seconds = 0.0

    def fail(pos: int, error: str) -> None:
        out = live.pop(pos, None)
        if out is not None:
            out.sink.abort()
        rows.append(failed_row(jobs[pos], error))

    def failed_row(job: Job, error: str) -> ManifestRow:
        logger.warning("failed: %s", error)
        return ManifestRow(job.item.name, job.item.source, "failed", error, 0, 0.0, job.duration, rank)

    def process(pos: int, row0: int, frames: torch.Tensor) -> None:
        """Run one chunk in batches of batch_size rows. Batches never mix outputs and start at multiples
        of batch_size, so an output's numbers do not depend on what else runs (1 rank == N ranks)."""
        nonlocal model_seconds
        output, job = live[pos], jobs[pos]
        for b0 in range(0, len(frames), opts.batch_size):
            t0 = time.perf_counter()
            x = frames[b0 : b0 + opts.batch_size].to(device, non_blocking=True)  # [B, F, 3, S, S] uint8
            out = {k: v.cpu().numpy() for k, v in step(x).items()}
            model_seconds += time.perf_counter() - t0
            output.sink.write(row0 + b0, out)
            output.done += len(x)
            bar.update(job.duration * len(x) / job.plan.num_rows)
        elapsed = time.perf_counter() - t_start
        bar.set_postfix_str(f"{bar.n / max(elapsed, 1e-9):.2f}x realtime", refresh=False)
        if output.done < job.plan.num_rows:
            return
        del live[pos]
        commits.append(writer.submit(commit, output))

    def commit(output: _Output) -> ManifestRow:
        """In the writer thread: serializing and fsyncing a finished output overlaps the next batches."""
        job = output.job
        try:
            output.sink.commit()
        except OSError as err:
            output.sink.abort()
            return failed_row(job, f"{job.item.name}: cannot write output ({err})")
        seconds = time.perf_counter() - output.t0
        return ManifestRow(
            job.item.name, job.item.source, "ok", None, job.plan.num_rows, seconds, job.duration, rank
        )

    try:
        for chunk in loader:
            if chunk.error is not None:
                fail(chunk.job, chunk.error)
                continue
            if chunk.job not in live:
                live[chunk.job] = _Output(jobs[chunk.job], opts, model)
            process(chunk.job, chunk.row0, chunk.frames)
    finally:
        for output in live.values():
            output.sink.abort()
        writer.shutdown(wait=True)  # outputs already complete are still written
        bar.close()
    rows += [c.result() for c in commits]
    opts.stats.update(
        model_seconds=model_seconds, wall_seconds=time.perf_counter() - t_start, video_seconds=total
    )
    return rows

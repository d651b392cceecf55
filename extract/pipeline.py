"""Extraction of video presets (nlq / mq / vq2d): plan -> skip what is done -> an engine -> the writer.

`extract_videos(model, items, opts)` probes every input, skips outputs a previous run completed with
the same weights and sampling (`egovlp.features`), and hands the rest, longest first, to an engine:

- `local` (extract/local.py): DataLoader worker processes decode, this process runs the model;
- `ray` (extract/ray_engine.py): a Ray Data stream, decode tasks feeding a pool of model actors.

Both engines feed model outputs back to one `Collector` in this process, which fills each output's
sink and commits it (on a writer thread) as soon as its last row is in, so a killed run loses only the
outputs in flight and both engines write the same bytes. An output's rows go through the model in
batches that start at multiples of the batch size and never mix outputs (`run_chunk`), so its numbers
do not depend on the engine or on what else runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from egovlp.errors import InputError
from egovlp.features import (
    GRID_FPS,
    VQ_FPS,
    WINDOW_FRAMES,
    ModelIdentity,
    clip_complete,
    feature_paths,
    h5_complete,
    model_identity,
)
from egovlp.validate import os_error_reason
from extract.inputs import WorkItem
from extract.manifest import ManifestRow
from extract.reader import Job, letterbox_geometry, normalize, probe
from extract.writer import FeatureSink, H5Sink

logger = logging.getLogger(__name__)

VIDEO_PRESETS = ("nlq", "mq", "vq2d")
ENGINES = ("local", "ray")


@dataclass
class ModelSpec:
    """How a worker loads the model (a Ray actor loads its own copy)."""

    path: str
    config: str | None = None
    device: str = "cpu"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16


@dataclass
class ExtractOptions:
    preset: str  # nlq | mq | vq2d
    out: Path
    fmt: str = "pt"  # pt | npy (nlq / mq)
    compat: bool = False
    save_768: bool = False
    batch_size: int = 32
    workers: int = 1  # decoding processes (local) or concurrent decode tasks (ray)
    short_side: int | None = None
    chunk_rows: int = 64
    pin_cpus: bool = True  # local engine, CPU model: decoders and the model on separate cores
    model_name: str = "egovlp"
    progress: bool = True
    engine: str = "local"  # local | ray
    ray_address: str | None = None
    replicas: int | None = None  # ray: model actors (default: the cluster's GPUs, or 1 on CPUs)


@dataclass
class ExtractResult:
    rows: list[ManifestRow]
    model_seconds: float = 0.0  # time inside the model (local engine; the actors' time under ray)
    wall_seconds: float = 0.0
    video_seconds: float = 0.0  # video computed in this run


@dataclass(frozen=True)
class OutputSpec:
    """What the writer needs to know about the model: sizes and identity."""

    identity: ModelIdentity
    dim: int  # projection dim (256)
    embed_dim: int  # video tower width (768)
    img_size: int
    patch_size: int

    @classmethod
    def of(cls, model, name: str) -> OutputSpec:
        video = model.cfg.video
        return cls(
            model_identity(model, name),
            model.cfg.projection_dim,
            video.embed_dim,
            video.img_size,
            video.patch_size,
        )


def load_extract_model(spec: ModelSpec):
    """The model in eval mode on `spec.device`, with its autocast dtype set (bf16 / fp16: CUDA only)."""
    import egovlp

    device = torch.device(spec.device)
    if device.type != "cuda" and spec.precision in ("bf16", "fp16"):
        raise InputError(
            f"--precision {spec.precision}: half precision is for CUDA only; use fp32 on the CPU"
        )
    model = egovlp.load_model(spec.path, config=spec.config, device=str(device))
    autocast = {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}
    model.autocast_dtype = autocast.get(spec.precision) if device.type == "cuda" else None
    return model


# ---- the model stage ------------------------------------------------------------------------------


def model_step(model, preset: str):
    """uint8 frames [B, F, 3, S, S] on the model's device -> named per-row outputs (tensors)."""
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
                return {"grid": tokens.reshape(len(x), grid_side, grid_side, -1).to(torch.float16)}
            cls = video(x)  # [B, 768] pre-projection CLS
            return {"features": model.vid_proj(cls).float(), "cls_768": cls.float()}

    return step


def run_chunk(model, step, frames: torch.Tensor, batch_size: int) -> dict[str, np.ndarray]:
    """Rows [n, F, 3, S, S] uint8 of one output, in batches from the chunk's start (chunks start at
    multiples of the batch size) -> {name: [n, ...] numpy}."""
    parts: dict[str, list[np.ndarray]] = {}
    for b0 in range(0, len(frames), batch_size):
        x = frames[b0 : b0 + batch_size].to(model.device, non_blocking=True)  # [B, F, 3, S, S] uint8
        for key, value in step(x).items():
            parts.setdefault(key, []).append(value.cpu().numpy())
    return {key: np.concatenate(values) for key, values in parts.items()}


# ---- outputs ---------------------------------------------------------------------------------------


def output_meta(job: Job, opts: ExtractOptions, spec: OutputSpec) -> dict:
    """The sidecar of one output (DESIGN.md B.6): source, identity, sampling, rows."""
    item, plan = job.item, job.plan
    meta = {
        "name": item.name,
        "clip_uid": item.clip_uid,
        "video_uid": item.video_uid,
        "source": item.source,
        "video_start_sec": round(job.start, 6),
        "video_end_sec": round(job.start + job.duration, 6),
        "source_fps": job.info.fps,
        **spec.identity.as_meta(),
        "preset": opts.preset,
        "compat": opts.compat,
        "short_side": opts.short_side,
        "num_rows": plan.num_rows,
    }
    if opts.preset == "vq2d":
        return meta | {"fps": VQ_FPS}
    return meta | {
        "fps": GRID_FPS,
        "window_frames": WINDOW_FRAMES,
        "rows_per_second": plan.rows_per_second,
        "frames_per_row": int(plan.indices.shape[1]),
        "dim": spec.dim,
        "dim_768": spec.embed_dim if opts.save_768 else None,
        "format": opts.fmt,
        "row_times": plan.row_times.tolist(),
        "frame_indices": plan.indices.tolist(),
    }


def make_sink(job: Job, opts: ExtractOptions, spec: OutputSpec) -> FeatureSink | H5Sink:
    meta = output_meta(job, opts, spec)
    rows = job.plan.num_rows
    if opts.preset == "vq2d":
        side = spec.img_size // spec.patch_size
        geometry = letterbox_geometry(job.info.width, job.info.height, spec.img_size)
        attrs = meta | geometry | {"patch_size": spec.patch_size, "dim": spec.embed_dim}
        return H5Sink(
            opts.out / f"{job.item.name}.h5", rows, (side, side, spec.embed_dim), job.plan.frame_numbers,
            job.plan.indices[:, 0], attrs,
        )  # fmt: skip
    paths = feature_paths(opts.out, job.item.name, opts.fmt, opts.save_768)
    return FeatureSink(paths, rows, spec.dim, spec.embed_dim if opts.save_768 else None, meta)


def is_complete(job: Job, opts: ExtractOptions, spec: OutputSpec) -> bool:
    """Done by an earlier run with the same weights, sampling and source (egovlp.features)."""
    meta = output_meta(job, opts, spec)
    if opts.preset == "vq2d":
        return h5_complete(opts.out / f"{job.item.name}.h5", job.plan.num_rows, meta)
    paths = feature_paths(opts.out, job.item.name, opts.fmt, opts.save_768)
    dim_768 = spec.embed_dim if opts.save_768 else None
    return clip_complete(paths, job.plan.num_rows, spec.dim, dim_768, meta)


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
            total=round(total, 2), unit="s", desc=f"extract {opts.preset}", disable=not opts.progress,
            dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} video-s [{elapsed}<{remaining}{postfix}]",
        )  # fmt: skip

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
            self.fail(
                pos, f"{job.item.name}: cannot write output in {self.opts.out} ({os_error_reason(err)})"
            )
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
            return failed_row(
                job, f"{job.item.name}: cannot write output in {self.opts.out} ({os_error_reason(err)})"
            )
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


# ---- the run ---------------------------------------------------------------------------------------


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
    jobs = sorted((r for r in results if isinstance(r, Job)), key=lambda j: (-j.duration, j.item.name))
    return jobs, [r for r in results if isinstance(r, ManifestRow)]


def extract_videos(
    model, items: list[WorkItem], opts: ExtractOptions, model_spec: ModelSpec | None = None
) -> ExtractResult:
    """Extract `items` into `opts.out` with `opts.engine`; one manifest row per item.

    `model` is the loaded model (local engine; under ray it gives the identity and sizes and the actors
    load `model_spec`)."""
    if opts.preset not in VIDEO_PRESETS:
        raise InputError(f"--preset {opts.preset!r}: choose one of {', '.join(VIDEO_PRESETS)}")
    if opts.engine not in ENGINES:
        raise InputError(f"--engine {opts.engine!r}: choose one of {', '.join(ENGINES)}")
    t0 = time.perf_counter()
    opts.out.mkdir(parents=True, exist_ok=True)
    spec = OutputSpec.of(model, opts.model_name)
    jobs, rows = plan_jobs(items, opts)
    todo: list[Job] = []
    for job in jobs:
        if is_complete(job, opts, spec):
            rows.append(
                ManifestRow(
                    job.item.name, job.item.source, "skipped", None, job.plan.num_rows, 0.0, job.duration
                )
            )
        else:
            todo.append(job)
    model_seconds = 0.0
    if todo:
        collector = Collector(todo, opts, spec)
        try:
            if opts.engine == "ray":
                from extract.ray_engine import run_ray

                if model_spec is None:
                    raise ValueError("the ray engine needs a ModelSpec for its actors")
                model_seconds = run_ray(model_spec, todo, opts, collector)
            else:
                from extract.local import run_local

                model_seconds = run_local(model, todo, opts, collector)
        except BaseException:
            collector.abort()
            raise
        rows += collector.finish()
    video_seconds = sum(j.duration for j in todo)
    return ExtractResult(rows, model_seconds, time.perf_counter() - t0, video_seconds)

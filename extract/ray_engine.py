"""The Ray engine: the same extraction as a Ray Data stream, on one machine or a cluster.

    work list (one row per output, longest first)
      -> decode: CPU tasks (`--workers` in flight), each reads one output's video front to back and
         yields chunks of rows (streaming; Ray Data's backpressure holds decoding back when the
         model falls behind)
      -> model: an actor pool, one replica per GPU (num_gpus=1) on a cluster, CPU actors otherwise;
         each replica loads the model once (`extract.stage`: weights cast to the run's precision)
         and runs chunks in the same batches as the local engine
      -> this process: the same `Collector` as the local engine writes every output atomically.

Ray restarts a dead actor and retries its task (Ray Data's defaults for actor pools), and a lost
decode task is re-run; the collector counts a chunk once, so a retry does not change any output.
Chunks travel as pickled dicts in a binary column (`frames` uint8 [n, F, 3, S, S] numpy).
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import torch

from egovlp.errors import InputError
from egovlp.precision import resolve_precision
from extract.collector import Collector
from extract.options import ExtractOptions, StageTimes
from extract.reader import DecodeStream, Job
from extract.stage import ModelSpec, load_extract_model, model_step, run_chunk

logger = logging.getLogger(__name__)


def connect(address: str | None) -> bool:
    """Join the cluster at `address` (or the one this process already joined, or start a local one).
    Returns True when this call started Ray (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset INFO lines on stderr
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise InputError(f"--ray-address {address}: cannot connect to a Ray cluster ({err})") from None
    return True


def cluster_device(address: str | None, requested: str | None) -> str:
    """Join the cluster (see `connect`) and name the replicas' device: cuda when it has GPUs (auto)."""
    import ray

    name = (requested or "auto").strip().lower()
    if name not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {requested!r}: with --engine ray use auto, cpu or cuda")
    connect(address)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if name == "cuda" and not gpus:
        raise InputError("--device cuda: the Ray cluster has no GPUs")
    return "cuda" if name == "auto" and gpus else ("cpu" if name == "auto" else name)


def _replica_precision(requested: str) -> str:
    """Ray task on one GPU of the cluster: what `requested` resolves to there."""
    return resolve_precision(requested, "cuda").name


def cluster_precision(requested: str | None, device: str) -> str:
    """The precision the replicas run in, by `egovlp.precision.resolve_precision`. `auto` on the
    cluster's GPUs depends on the GPU (bf16 or fp16), so a driver without one asks a GPU of the
    cluster (after `cluster_device` joined it)."""
    if requested not in (None, "auto") or not device.startswith("cuda") or torch.cuda.is_available():
        return resolve_precision(requested, device).name
    import ray

    probe = ray.remote(num_gpus=1, num_cpus=0)(_replica_precision)
    return ray.get(probe.remote("auto"))


def _blob(obj: object) -> np.ndarray:
    return np.array([pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)], dtype=object)


def decode_batch(
    batch: dict[str, np.ndarray],
    size: int,
    letterbox: bool,
    short_side: int | None,
    rows: int,
    first_rows: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Ray task: work-list rows -> one record per decoded chunk of rows."""
    torch.set_num_threads(1)
    for blob in batch["job"]:
        pos, job = pickle.loads(blob)
        stream = DecodeStream([job], size, letterbox, short_side, rows, first_rows)
        for chunk in stream.read_job(pos, job, ramp=True):
            record = {
                "pos": pos,
                "row0": chunk.row0,
                "frames": None if chunk.frames is None else chunk.frames.numpy(),
                "error": chunk.error,
                "decode_seconds": chunk.decode_seconds,
            }
            yield {"chunk": _blob(record)}


class ModelReplica:
    """Ray actor: one copy of the model; chunks of frames -> chunks of model outputs."""

    def __init__(self, spec: dict, preset: str, batch_size: int, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.model = load_extract_model(ModelSpec(**spec))
        self.step = model_step(self.model, preset)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for blob in batch["chunk"]:
            chunk = pickle.loads(blob)
            frames = chunk.pop("frames")
            chunk["outputs"], chunk["seconds"] = None, 0.0
            if chunk["error"] is None:
                t0 = time.perf_counter()
                frames = torch.from_numpy(frames)  # [n, F, 3, S, S] uint8
                chunk["outputs"] = run_chunk(self.model, self.step, frames, self.batch_size)
                chunk["seconds"] = time.perf_counter() - t0
            results.append(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))
        return {"result": np.array(results, dtype=object)}


def decode_memory(opts: ExtractOptions, img_size: int) -> int:
    """Bytes a decode task reserves: the worker process (Python + torch, about 700 MiB measured) and its
    chunk of frames a few times over (decoded, resized, shipped). A resource the model actors do not
    ask for, so Ray Data does not fuse decoding into them."""
    frames_per_row = 1 if opts.preset == "vq2d" else 4
    return 4 * opts.decode_chunk_rows * frames_per_row * 3 * img_size * img_size + (768 << 20)


def plan_resources(spec: ModelSpec, opts: ExtractOptions) -> tuple[ModelSpec, int, int, int, float]:
    """(spec with a concrete device, replicas, decode tasks, threads per replica, GPUs per replica)."""
    import ray

    cluster = ray.cluster_resources()
    cpus, gpus = int(cluster.get("CPU", 1)), int(cluster.get("GPU", 0))
    device = spec.device if spec.device != "auto" else ("cuda" if gpus else "cpu")
    if device.startswith("cuda"):
        if not gpus:
            raise InputError("--device cuda: the Ray cluster has no GPUs")
        replicas = opts.replicas or gpus
        spec = ModelSpec(spec.path, spec.config, "cuda", spec.precision)  # Ray picks each replica's GPU
        workers = opts.workers or max(1, cpus - replicas)
        return spec, replicas, workers, 1, 1.0
    replicas = opts.replicas or 1
    workers = opts.workers or max(1, cpus - replicas)
    threads = max(1, (cpus - min(workers, cpus - 1)) // replicas)
    return ModelSpec(spec.path, spec.config, "cpu", spec.precision), replicas, workers, threads, 0.0


def build_dataset(spec: ModelSpec, jobs: list[Job], opts: ExtractOptions, img_size: int):
    """The Ray Data pipeline; iterate it for one record per chunk of model outputs."""
    import ray

    spec, replicas, workers, threads, gpus = plan_resources(spec, opts)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logger.info(
        "ray: %d model replicas (%s, %d threads), %d decode tasks", replicas, spec.device, threads, workers
    )
    items = [
        {"job": pickle.dumps((pos, job), protocol=pickle.HIGHEST_PROTOCOL)} for pos, job in enumerate(jobs)
    ]
    ds = ray.data.from_items(items, override_num_blocks=len(items))  # one block per output, longest first
    decode_kwargs = {
        "size": img_size,
        "letterbox": opts.preset == "vq2d",
        "short_side": opts.short_side,
        "rows": opts.decode_chunk_rows,
        "first_rows": opts.batch_size,
    }
    ds = ds.map_batches(
        decode_batch,
        batch_size=1,
        batch_format="numpy",
        num_cpus=1,
        memory=decode_memory(opts, img_size),
        compute=ray.data.TaskPoolStrategy(size=workers),
        fn_kwargs=decode_kwargs,
    )
    replica_kwargs = {
        "spec": asdict(spec),
        "preset": opts.preset,
        "batch_size": opts.batch_size,
        "threads": threads,
    }
    return ds.map_batches(
        ModelReplica,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=replicas),
        num_cpus=threads if not gpus else 1,
        num_gpus=gpus,
        fn_constructor_kwargs=replica_kwargs,
    )


def run_ray(
    model, spec: ModelSpec | None, jobs: list[Job], opts: ExtractOptions, collector: Collector
) -> StageTimes:
    """Run `jobs` on Ray, feeding `collector`; the replicas load `spec` (`model`, this process's copy,
    is not used). Returns the seconds the decode tasks and the replicas spent in each stage."""
    import ray

    if spec is None:
        raise ValueError("the ray engine needs a ModelSpec for its replicas")
    started = connect(opts.ray_address)
    times = StageTimes()
    try:
        ds = build_dataset(spec, jobs, opts, collector.spec.img_size)
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2):
            for blob in batch["result"]:
                record = pickle.loads(blob)
                times.decode += record["decode_seconds"]
                if record["error"] is not None:
                    collector.fail(record["pos"], record["error"])
                else:
                    collector.add(record["pos"], record["row0"], record["outputs"])
                    times.model += record["seconds"]
    except ray.exceptions.RayError as err:
        # the cluster could not finish (head or driver lost, an actor that cannot start): what is
        # written stays, the rest are failed rows, and a rerun skips what is done
        message = " ".join(str(err).split())[:300]
        logger.error("the Ray job stopped: %s", message)
        collector.fail_rest(f"the Ray job stopped before this output was done ({message})")
    finally:
        if started:
            ray.shutdown()
    return times

"""Decoding stage: probed work items -> chunks of preprocessed uint8 frames, in worker processes.

`probe` opens each file once (fps, frame count, size) and turns the item into a `Job` with its
`SamplePlan`. `DecodeStream` is a torch `IterableDataset`: each DataLoader worker takes every
n-th job and reads it front to back in chunks of rows (one sequential pass per chunk, a seek only
at the chunk's start), so the decoder never seeks per frame. The workers also do the resize / crop
(uint8, 4x less to ship between processes than float); the model stage only normalizes.
A job that fails to decode yields one error record and the stream goes on with the next job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torchvision.transforms.v2 import functional as TF

from egovlp.errors import VideoReadError
from egovlp.transforms import EVAL_RESIZE, IMAGENET_MEAN, IMAGENET_STD
from egovlp.video import VideoInfo, read_frames, video_info
from extract.inputs import WorkItem
from extract.sampling import SamplePlan, compat_plan, vq_plan, window_plan

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """One work item after probing: where to read and which file frames feed which row."""

    item: WorkItem
    info: VideoInfo
    start: float
    duration: float
    plan: SamplePlan


def probe(item: WorkItem, preset: str, compat: bool = False) -> Job:
    """Open the file once and plan its rows. Raises VideoReadError (or InputError) naming the input."""
    if item.error:
        raise VideoReadError(item.error)
    info = video_info(item.source)
    if item.start >= info.duration:
        raise VideoReadError(
            f"{item.source}: clip {item.name} starts at {item.start:.3f}s, past the video's end ({info.duration:.3f}s)"
        )
    if item.end is not None:
        end = item.end
    else:  # the whole file; --compat: the published reader's clip [0, vlen / fps]
        end = info.num_frames / info.fps if compat else info.duration
    duration = end - item.start
    if duration <= 0:
        raise VideoReadError(f"{item.source}: clip {item.name} has no length (start {item.start}, end {end})")
    if preset == "vq2d":
        plan = vq_plan(item.start, duration, info.fps, info.num_frames)
    elif compat:
        try:
            plan = compat_plan(item.start, end, info.fps, info.num_frames)
        except VideoReadError as err:
            raise VideoReadError(f"{item.source}: clip {item.name}: {err}") from None
    else:
        plan = window_plan(item.start, duration, info.fps, info.num_frames)
    return Job(item, info, item.start, duration, plan)


# --------------------------------------------------------------------------------------------
# frame geometry


def crop_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> uint8 [N, 3, size, size]: the eval transform (B.3) without normalizing."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [N, 3, H, W]
    x = TF.resize(x, [EVAL_RESIZE], antialias=True)  # short side 256
    x = TF.center_crop(x, [EVAL_RESIZE, EVAL_RESIZE])
    return TF.resize(x, [size, size], antialias=True)  # [N, 3, size, size]


def letterbox_geometry(width: int, height: int, size: int) -> dict[str, float | int]:
    """Resize-long-side-and-pad geometry: model pixel = original pixel * scale + pad."""
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return {
        "original_width": int(width),
        "original_height": int(height),
        "scale": float(scale),
        "resized_width": new_w,
        "resized_height": new_h,
        "pad_left": (size - new_w) // 2,
        "pad_top": (size - new_h) // 2,
        "input_size": int(size),
    }


def letterbox_frames(frames: np.ndarray, geometry: dict) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> uint8 [N, 3, size, size]: the whole frame resized and padded, so every
    box of the original frame is visible (VQ2D); the padding takes the mean colour (0 after normalizing)."""
    size = geometry["input_size"]
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [N, 3, H, W]
    x = TF.resize(x, [geometry["resized_height"], geometry["resized_width"]], antialias=True)
    mean = torch.tensor([round(255 * m) for m in IMAGENET_MEAN], dtype=torch.uint8).view(1, 3, 1, 1)
    out = mean.expand(x.shape[0], 3, size, size).clone()  # [N, 3, size, size]
    top, left = geometry["pad_top"], geometry["pad_left"]
    out[:, :, top : top + x.shape[2], left : left + x.shape[3]] = x
    return out


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 ImageNet-normalized (the last step of the eval transform)."""
    x = x.to(torch.float32).div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return x.sub_(mean).div_(std)


# --------------------------------------------------------------------------------------------
# the stream


@dataclass
class Chunk:
    """Rows [row0, row0 + n) of job `job`: frames uint8 [n, F, 3, S, S]; `error` set on failure."""

    job: int
    row0: int
    frames: torch.Tensor | None
    last: bool
    error: str | None = None
    decode_seconds: float = 0.0


class DecodeStream(IterableDataset):
    """Jobs -> Chunks. Use with `DataLoader(stream, batch_size=None, num_workers=n)`."""

    def __init__(
        self,
        jobs: list[Job],
        size: int,
        letterbox: bool = False,
        short_side: int | None = None,
        chunk_rows: int = 64,
        first_rows: int | None = None,
    ) -> None:
        self.jobs = jobs
        self.size = size
        self.letterbox = letterbox
        self.short_side = short_side
        self.chunk_rows = max(1, chunk_rows)
        # A worker's first chunks ramp up from `first_rows`, doubling to `chunk_rows`: the model starts
        # after one batch is decoded, and each next chunk is decoded while the model runs the last one.
        self.first_rows = min(max(1, first_rows or self.chunk_rows), self.chunk_rows)

    def _frames(self, job: Job, indices: np.ndarray) -> torch.Tensor:
        """File frame indices [n, F] -> uint8 [n, F, 3, S, S]."""
        n, f = indices.shape
        unique, inverse = np.unique(indices.reshape(-1), return_inverse=True)
        frames = read_frames(job.item.source, unique.tolist(), short_side=self.short_side)  # [U, H, W, 3]
        if self.letterbox:
            geometry = letterbox_geometry(job.info.width, job.info.height, self.size)
            x = letterbox_frames(frames, geometry)
        else:
            x = crop_frames(frames, self.size)  # [U, 3, S, S]
        return x[torch.from_numpy(inverse.reshape(-1))].reshape(n, f, *x.shape[1:])

    def _bounds(self, rows: int, ramp: bool) -> Iterator[tuple[int, int]]:
        """[row0, row1) of each chunk; with `ramp`, sizes first_rows, 2 * first_rows, ... chunk_rows."""
        row0, size = 0, self.first_rows if ramp else self.chunk_rows
        while row0 < rows:
            yield row0, min(row0 + size, rows)
            row0, size = row0 + size, min(2 * size, self.chunk_rows)

    def read_job(self, pos: int, job: Job, ramp: bool = False) -> Iterator[Chunk]:
        """The chunks of one job, front to back; a decode failure ends it with one error chunk."""
        rows = job.plan.num_rows
        for row0, row1 in self._bounds(rows, ramp):
            t0 = time.perf_counter()
            try:
                frames = self._frames(job, job.plan.indices[row0:row1])
            except VideoReadError as err:
                yield Chunk(pos, row0, None, True, error=str(err))
                return
            except Exception as err:  # noqa: BLE001 - a decoder crash on one file must not stop the run
                logger.debug("decode failed", exc_info=True)
                yield Chunk(pos, row0, None, True, error=f"{job.item.source}: {type(err).__name__}: {err}")
                return
            last = row1 >= rows
            yield Chunk(pos, row0, frames, last, decode_seconds=time.perf_counter() - t0)

    def __iter__(self) -> Iterator[Chunk]:
        worker = get_worker_info()
        wid, nw = (0, 1) if worker is None else (worker.id, worker.num_workers)
        for k, pos in enumerate(range(wid, len(self.jobs), nw)):
            yield from self.read_job(pos, self.jobs[pos], ramp=k == 0)

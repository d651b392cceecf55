"""FHO clips -> model inputs: 16 frames over the 8 s window, labels, B.3 transforms, epoch order.

Frame i of a clip is the parent frame `parent_start_frame + (parent_end_frame - parent_start_frame)
/ 16 * i` rounded (the official mapping, so PNR index i means the same frame in the label, the input
and the prediction): 2 fps over an 8 s window. Videos are `{videos}/{video_uid}.mp4` or 600 s
chunks (`egovlp.video.read_ego4d_frames`), decoded at a short side a little above the model's input.

    frames  float32 [B, 16, 3, size, size]  train: one random crop + flip per clip; eval: centre crop
    label   int64 [B]                        OSCC: 0/1 state change; PNR: index of the PNR frame

Augmentation draws from a generator seeded by (seed, epoch, clip), and the epoch order from
(seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from egovlp.errors import InputError
from egovlp.formats.fho import FHOClip, pnr_index_to_frame, pnr_label
from egovlp.timebase import GRID_FPS
from egovlp.transforms import eval_transform, train_transform
from egovlp.video import read_ego4d_frames, resolve_ego4d_video

log = logging.getLogger(__name__)

SOURCE_FPS = GRID_FPS  # FHO frame numbers are positions on the 30 fps grid (C.7)
# frames preloaded in this process, shared by every dataset over the same clips (one decode per
# process, e.g. for the OSCC and PNR runs of the benchmark): (videos, unique_id, frames, size) -> uint8
_PRELOADED: dict[tuple[str, str, int, int], np.ndarray] = {}


def sample_frames(clip: FHOClip, num_frames: int = 16) -> list[int]:
    """Parent frames of the `num_frames` inputs: the official index -> frame mapping, rounded."""
    return [
        int(round(pnr_index_to_frame(clip.parent_start_frame, clip.parent_end_frame, i, num_frames)))
        for i in range(num_frames)
    ]


def clip_label(clip: FHOClip, task: str, num_frames: int = 16) -> int:
    if task == "oscc":
        return int(clip.state_change)
    label = pnr_label(clip, num_frames)
    if label is None:
        raise ValueError(f"clip {clip.unique_id} has no state change: no PNR label")
    return label


def training_clips(clips: Sequence[FHOClip], task: str, source: str) -> list[FHOClip]:
    """OSCC trains on every clip, PNR on the clips with a state change."""
    used = list(clips) if task == "oscc" else [c for c in clips if c.state_change]
    if not used:
        raise InputError(f"{source}: no clips with a state change to train PNR on")
    return used


def decode_side(size: int) -> int:
    """Short side to decode at: the model input scaled like B.3's 256 for 224."""
    return int(math.ceil(size * 256 / 224))


class FHOClips(torch.utils.data.Dataset):
    """Items are keyed `(epoch, index)`: -> (frames [F, 3, size, size], label, index)."""

    def __init__(
        self,
        clips: Sequence[FHOClip],
        videos: str | os.PathLike,
        task: str,
        num_frames: int = 16,
        size: int = 224,
        train: bool = False,
        seed: int = 0,
        labels: bool = True,
    ) -> None:
        self.clips = list(clips)
        self.videos = videos
        self.task = task
        self.num_frames = num_frames
        self.size = size
        self.train = train
        self.seed = seed
        self.labels = labels
        self.cache: dict[int, np.ndarray] = {}
        for clip in self.clips:  # every video is there before any work starts
            resolve_ego4d_video(videos, clip.video_uid)

    def __len__(self) -> int:
        return len(self.clips)

    def frames(self, index: int) -> np.ndarray:
        """uint8 [F, H, W, 3] of clip `index` (decoded, or from the cache)."""
        if index in self.cache:
            return self.cache[index]
        clip = self.clips[index]
        times = [f / SOURCE_FPS for f in sample_frames(clip, self.num_frames)]
        return read_ego4d_frames(self.videos, clip.video_uid, times, short_side=decode_side(self.size))

    def preload(self, progress: bool = False) -> None:
        """Decode every clip once and keep the frames in memory (small datasets; the benchmark)."""
        from tqdm import tqdm

        for i in tqdm(range(len(self.clips)), desc="decode clips", disable=not progress, leave=False):
            key = (os.fspath(self.videos), self.clips[i].unique_id, self.num_frames, self.size)
            if key not in _PRELOADED:
                _PRELOADED[key] = self.frames(i)
            self.cache[i] = _PRELOADED[key]

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        frames = self.frames(index)
        if self.train:
            seq = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]
            x = train_transform(frames, self.size, torch.Generator().manual_seed(int(seq)))
        else:
            x = eval_transform(frames, self.size)
        label = clip_label(self.clips[index], self.task, self.num_frames) if self.labels else -1
        return x, label, index


def epoch_order(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """This process's clips for `epoch`: a seeded permutation, cut to a multiple of the process count
    so every process takes the same number of steps, then dealt out round-robin."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    per_rank = n // world_size
    return perm[: per_rank * world_size][rank::world_size]


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    return math.ceil((n // world_size) / batch_size)


def epoch_loader(
    dataset: FHOClips,
    epoch: int,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    skip_batches: int = 0,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """Batches of `epoch` for this process, starting after `skip_batches` (resume)."""
    order = epoch_order(len(dataset), epoch, seed, rank, world_size)[skip_batches * batch_size :]
    keys = [(epoch, i) for i in order]
    return torch.utils.data.DataLoader(
        _Keys(dataset, keys), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )


def eval_loader(dataset: FHOClips, batch_size: int, num_workers: int = 0) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


class _Keys(torch.utils.data.Dataset):
    def __init__(self, dataset: FHOClips, keys: list[tuple[int, int]]) -> None:
        self.dataset, self.keys = dataset, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        return self.dataset[self.keys[i]]

"""The pretraining input pipeline: webdataset shards (see `pretrain.shards`) -> EgoNCE batches.

Shards are split across processes (`wds.split_by_node`) and DataLoader workers
(`wds.split_by_worker`); by default they are resampled with replacement, so an epoch is simply
`epoch_size` clips and any number of epochs works. Each sample's JPEG frames are decoded and given
the B.3 train transform (one random crop and flip per clip), and B samples become one batch of 2B
clips: the B clips followed by their B scene-aware negatives.

    video   float32 [2B, F, 3, size, size]
    text    list[str] (2B)
    verb    float32 [2B, num_verbs]  multi-hot
    noun    float32 [2B, num_nouns]  multi-hot
    segment list[str] (2B)           video_uid + "_" + minute; row i and row B + i share it (or the
                                     negative is the nearest clip of that video, see the shard writer)
    video_uid list[str], clip_idx int64 [2B]
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from egovlp.cli_args import OneLineParser
from egovlp.errors import InputError
from egovlp.formats.taxonomy import multi_hot
from egovlp.transforms import train_transform

SIZES_NAME = "sizes.json"


def expand_shards(shards: str | os.PathLike | list[str]) -> list[str]:
    """A folder (all shard-*.tar), a brace pattern "dir/shard-{000000..000009}.tar", a glob or a list."""
    if isinstance(shards, (list, tuple)):
        urls = [os.fspath(s) for s in shards]
    else:
        text = os.fspath(shards)
        if os.path.isdir(text):
            urls = sorted(glob.glob(os.path.join(text, "shard-*.tar")))
        elif "{" in text:
            import braceexpand

            urls = list(braceexpand.braceexpand(text))
        elif any(c in text for c in "*?["):
            urls = sorted(glob.glob(text))
        else:
            urls = [text]
    if not urls:
        raise InputError(f"{shards}: no shards found")
    missing = [u for u in urls if "://" not in u and not os.path.isfile(u)]
    if missing:
        raise InputError(
            f"shard file(s) not found: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
        )
    return urls


def num_samples(urls: list[str]) -> int | None:
    """Total samples of these shards from the sizes.json beside them (None if any is unknown)."""
    total = 0
    cache: dict[Path, dict] = {}
    for url in urls:
        folder = Path(url).parent
        if folder not in cache:
            path = folder / SIZES_NAME
            cache[folder] = json.loads(path.read_text()) if path.is_file() else {}
        count = cache[folder].get(Path(url).name)
        if count is None:
            return None
        total += int(count)
    return total


def _decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> uint8 [H, W, 3] RGB."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


class _ToTensors:
    """Raw tar sample -> {"pos": clip, "neg": clip}, each clip decoded, augmented and tagged.

    Each sample's crop/flip generator is seeded from (seed, rank, worker, position of the sample in
    that worker's stream), so a run is reproducible and a resumed run that skipped k samples draws
    exactly the augmentations the uninterrupted run drew.
    """

    def __init__(self, size: int, num_verbs: int, num_nouns: int, seed: int):
        self.size, self.num_verbs, self.num_nouns, self.seed = size, num_verbs, num_nouns, seed

    def _gen(self, position: int) -> torch.Generator:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        return torch.Generator().manual_seed(wds.utils.make_seed(self.seed, rank, worker, position))

    def _clip(self, sample: dict, meta: dict, prefix: str, generator: torch.Generator) -> dict:
        count = len(meta["times"])
        try:
            jpegs = [sample[f"{prefix}{k}.jpg"] for k in range(count)]
        except KeyError as err:
            raise InputError(
                f"{sample.get('__url__')}: sample {sample['__key__']} lacks {err.args[0]}"
            ) from None
        frames = torch.from_numpy(np.stack([_decode_jpeg(data) for data in jpegs]))  # [F, H, W, 3] uint8
        video = train_transform(frames, self.size, generator)  # [F, 3, size, size]
        try:
            verb = multi_hot(meta["tag_verb"], self.num_verbs)  # [V]
            noun = multi_hot(meta["tag_noun"], self.num_nouns)  # [M]
        except InputError as err:
            raise InputError(f"{sample.get('__url__')}: sample {sample['__key__']}: {err}") from None
        return {
            "video": video,
            "text": meta["text"],
            "verb": verb,
            "noun": noun,
            "segment": meta["segment"],
            "video_uid": meta["video_uid"],
            "clip_idx": int(meta["clip_idx"]),
        }

    def __call__(self, sample: dict) -> dict:
        meta = json.loads(sample["json"])
        generator = self._gen(sample.get("__position__", 0))
        return {
            "pos": self._clip(sample, meta, "pos", generator),
            "neg": self._clip(sample, meta["negative"], "neg", generator),
        }


class _SkipAndNumber:
    """Pipeline stage: number the raw samples of this worker's stream and drop the first ones that a
    resumed run already consumed, before any JPEG is decoded (skipping costs only tar reads)."""

    def __init__(self, skip_batches: int, batch_size: int):
        self.skip_batches, self.batch_size = skip_batches, batch_size

    def __call__(self, source):
        _, _, worker, num_workers = wds.utils.pytorch_worker_info()
        workers = max(1, num_workers)
        # the DataLoader takes batches round-robin: worker w made batches w, w + W, w + 2W, ...
        skip = (
            (self.skip_batches - worker + workers - 1) // workers * self.batch_size
            if self.skip_batches
            else 0
        )
        for position, sample in enumerate(source):
            if position >= skip:
                sample["__position__"] = position
                yield sample


def collate_pairs(samples: list[dict]) -> dict:
    """B samples -> one batch of 2B clips: the B clips, then their B negatives in the same order."""
    clips = [s["pos"] for s in samples] + [s["neg"] for s in samples]
    return {
        "video": torch.stack([c["video"] for c in clips]),  # [2B, F, 3, S, S]
        "text": [c["text"] for c in clips],
        "verb": torch.stack([c["verb"] for c in clips]),  # [2B, V]
        "noun": torch.stack([c["noun"] for c in clips]),  # [2B, M]
        "segment": [c["segment"] for c in clips],
        "video_uid": [c["video_uid"] for c in clips],
        "clip_idx": torch.tensor([c["clip_idx"] for c in clips], dtype=torch.int64),  # [2B]
    }


def _unreadable_shard(exn: Exception) -> bool:
    """webdataset handler: a shard that cannot be read as a tar -> InputError naming the shard."""
    url = next((a for a in reversed(exn.args) if isinstance(a, str) and ".tar" in a), "a shard")
    raise InputError(
        f"{url}: not a readable shard tar ({type(exn).__name__}: {exn.args[0] if exn.args else exn})"
    )


def make_train_loader(
    shards: str | list[str],
    batch_size: int,
    num_workers: int,
    epoch_size: int,
    seed: int,
    num_verbs: int,
    num_nouns: int,
    size: int = 224,
    *,
    resampled: bool = True,
    shuffle_buffer: int = 1000,
    world_size: int | None = None,
    skip_batches: int = 0,
) -> wds.WebLoader:
    """Batches of B clips + B negatives (module docstring) for `epoch_size` clips per epoch in all.

    With resampled=False every shard is read once per pass, so each of the num_workers x processes
    readers needs at least one shard. The loader carries `num_batches` (per process) and `num_samples`.
    `skip_batches` starts the (resampled) stream after that many batches of this process, exactly
    where an uninterrupted run would be; iterate one loader continuously for that guarantee.
    """
    if batch_size <= 0 or epoch_size < 0 or num_workers < 0 or (epoch_size == 0 and not resampled):
        raise ValueError("batch_size must be positive, epoch_size >= 0 (0: endless, resampled only)")
    urls = expand_shards(shards)
    if world_size is None:
        world_size = wds.utils.pytorch_worker_info()[1]
    readers = max(1, num_workers) * world_size
    if not resampled:
        assert len(urls) >= readers, (
            f"{len(urls)} shard(s) for {max(1, num_workers)} worker(s) x {world_size} process(es): "
            f"every reader needs at least one shard; write at least {readers} shards "
            "(smaller --shard-size) or use resampled=True"
        )
    to_tensors = _ToTensors(size, num_verbs, num_nouns, seed)
    batched = wds.batched(batch_size, collation_fn=collate_pairs, partial=False)
    if resampled:
        # an endless stream fixed by the seed: shards drawn per (seed, rank, worker), a seeded
        # shuffle buffer and per-sample augmentation seeds, so skip_batches resumes exactly
        dataset = wds.DataPipeline(
            wds.ResampledShards(urls, seed=seed, deterministic=True),
            wds.tarfile_to_samples(handler=_unreadable_shard),
            wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), rng=random.Random(seed)),
            _SkipAndNumber(skip_batches, batch_size),
            wds.map(to_tensors),
            batched,
        )
    else:
        dataset = wds.DataPipeline(
            wds.SimpleShardList(urls),
            wds.split_by_node,
            wds.split_by_worker,
            wds.tarfile_to_samples(handler=_unreadable_shard),
            wds.shuffle(shuffle_buffer, rng=random.Random(seed)),
            _SkipAndNumber(0, batch_size),
            wds.map(to_tensors),
            batched,
        )
    # every process gets epoch_size / world_size clips; each worker produces its share of batches.
    # epoch_size 0 (resampled only) is one endless epoch: what the trainer uses, so that a resumed
    # run never meets an epoch boundary the uninterrupted run did not have.
    worker_batches = 0
    if epoch_size > 0:
        num_batches = max(1, epoch_size // (batch_size * world_size))
        worker_batches = math.ceil(num_batches / max(1, num_workers))
        dataset = dataset.with_epoch(worker_batches)
    loader = wds.WebLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),  # leave the global RNG (dropout) untouched
    )
    loader.num_batches = worker_batches * max(1, num_workers) if worker_batches else None
    loader.num_samples = loader.num_batches * batch_size * world_size if worker_batches else None
    return loader


def main(argv: list[str] | None = None) -> int:
    """`python -m pretrain.loader --shards DIR --taxonomy DIR`: one epoch through the loader, with stats."""
    import sys
    import time

    from tqdm import tqdm

    from egovlp.formats.taxonomy import read_taxonomy
    from egovlp.validate import non_negative_int, positive_int

    p = OneLineParser(prog="egovlp loader", description=main.__doc__)
    p.add_argument("--shards", required=True, help="shard folder, brace pattern or glob")
    p.add_argument("--taxonomy", required=True, help="folder with verb_taxonomy.json / noun_taxonomy.json")
    p.add_argument("--batch-size", type=positive_int, default=8, help="clips per batch")
    p.add_argument("--workers", type=non_negative_int, default=1, help="loader processes (0: in process)")
    p.add_argument(
        "--epoch-size", type=non_negative_int, default=0, help="clips (default: all samples of the shards)"
    )
    p.add_argument("--size", type=positive_int, default=224, help="frame size in pixels")
    args = p.parse_args(argv)
    urls = expand_shards(args.shards)
    epoch = args.epoch_size or num_samples(urls) or 0
    if epoch <= 0:
        raise InputError(f"{args.shards}: no sizes.json beside the shards; pass --epoch-size")
    verbs = len(read_taxonomy(Path(args.taxonomy) / "verb_taxonomy.json"))
    nouns = len(read_taxonomy(Path(args.taxonomy) / "noun_taxonomy.json"))
    loader = make_train_loader(urls, args.batch_size, args.workers, epoch, 0, verbs, nouns, args.size)
    t0, clips, same_segment = time.perf_counter(), 0, 0
    shape = None
    for batch in tqdm(loader, total=loader.num_batches, desc="epoch", file=sys.stderr):
        half = len(batch["segment"]) // 2
        same_segment += sum(
            a == b for a, b in zip(batch["segment"][:half], batch["segment"][half:], strict=True)
        )
        clips += len(batch["segment"])
        shape = list(batch["video"].shape)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "batches": loader.num_batches,
                "clips": clips,
                "video_batch_shape": shape,
                "negatives_from_same_segment": same_segment,
                "clips_per_s": round(clips / seconds, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    from egovlp.cli import run

    raise SystemExit(run(["loader", *__import__("sys").argv[1:]]))

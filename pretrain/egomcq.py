"""EgoMCQ validation (docs/design.md B.5): pick, among 5 clips, the one a narration describes.

Score: argmax of cosine(query text, choice video). Types: 1 = inter-video, 2 = intra-video (the
original code prints these two labels swapped; here they are reported under their real names).
Questions are split across processes by index, without padding, so every question counts once.
"""

from __future__ import annotations

import json
import logging
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from egovlp.cli_args import OneLineParser
from egovlp.errors import InputError, VideoReadError
from egovlp.formats.egomcq import INTER, INTRA, MCQItem, read_egomcq
from egovlp.transforms import eval_transform
from egovlp.validate import (
    add_model_arguments,
    input_dir,
    input_file,
    non_negative_int,
    positive_int,
    resolve_device,
)
from egovlp.video import clip_sample_times, read_ego4d_frames

log = logging.getLogger(__name__)


class EgoMCQClips(Dataset):
    """Item i -> (index, the choices' frames [C, F, 3, S, S]) or (index, error message)."""

    def __init__(self, items: list[MCQItem], video_root: str, num_frames: int, size: int) -> None:
        self.items, self.video_root, self.num_frames, self.size = items, video_root, num_frames, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        clips = []
        for choice in self.items[i].choices:
            times = clip_sample_times(float(choice["clip_start"]), float(choice["clip_end"]), self.num_frames)
            try:
                frames = read_ego4d_frames(self.video_root, str(choice["video_uid"]), times)
            except VideoReadError as err:  # reported by the main process with the question's key
                return i, f"EgoMCQ question {self.items[i].key}: {err}"
            clips.append(eval_transform(frames, self.size))
        return i, torch.stack(clips)


def _collate(batch):
    return batch


@torch.no_grad()
def evaluate_egomcq(
    model,
    items: list[MCQItem],
    video_root: str,
    num_frames: int = 4,
    batch_size: int = 16,
    num_workers: int = 2,
    rank: int = 0,
    world_size: int = 1,
    gather=None,
) -> dict:
    """Accuracy in percent: {"inter", "intra", "n_inter", "n_intra"} (docs/design.md C.5).

    `gather(obj) -> list` collects per-process results (e.g. accelerate's gather_object); it is
    required when world_size > 1.
    """
    was_training = model.training
    model.eval()
    mine = list(range(rank, len(items), world_size))
    dataset = EgoMCQClips([items[i] for i in mine], video_root, num_frames, model.cfg.video.img_size)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    device = model.device
    results: list[tuple[str, int, bool]] = []
    for batch in loader:
        errors = [clips for _, clips in batch if isinstance(clips, str)]
        if errors:
            raise InputError(errors[0])
        local = [mine[j] for j, _ in batch]
        texts = [items[i].query["clip_text"] for i in local]
        counts = [clips.shape[0] for _, clips in batch]
        frames = torch.cat([clips for _, clips in batch]).to(device, model.dtype)  # (sum C, F, 3, S, S)
        text = F.normalize(model.embed_text(**model.tokenize(texts)).float(), dim=-1, eps=1e-8)
        video = F.normalize(model.embed_video(frames).float(), dim=-1, eps=1e-8)
        for row, (i, choices) in enumerate(zip(local, torch.split(video, counts), strict=True)):
            pred = int((choices @ text[row]).argmax())
            results.append((items[i].key, items[i].type, pred == items[i].answer))
    if world_size > 1:
        if gather is None:
            raise ValueError("evaluate_egomcq: world_size > 1 needs a gather function")
        results = [r for part in gather(results) for r in (part if isinstance(part, list) else [part])]
    model.train(was_training)
    return egomcq_scores(results)


def egomcq_scores(results: list[tuple[str, int, bool]]) -> dict:
    unique = {key: (kind, ok) for key, kind, ok in results}  # one vote per question, whatever the split
    out: dict = {}
    for name, kind in (("inter", INTER), ("intra", INTRA)):
        hits = [ok for k, ok in unique.values() if k == kind]
        out[name] = 100.0 * sum(hits) / len(hits) if hits else 0.0
        out[f"n_{name}"] = len(hits)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="egovlp eval egomcq", description="EgoMCQ inter/intra-video accuracy.")
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="egomcq.json")
    parser.add_argument("--videos", required=True, help="video root ({video_uid}.mp4 or 600 s chunks)")
    parser.add_argument("--frames", type=positive_int, default=4, help="frames per clip")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="questions per batch")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="decoding processes")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    input_file(args.data, "--data")
    input_dir(args.videos, "--videos")
    if args.config is not None:
        input_file(args.config, "--config")

    import egovlp

    items = read_egomcq(args.data)
    if not items:
        raise InputError(f"--data {args.data}: holds no questions (an accuracy over none means nothing)")
    from egovlp.precision import resolve_precision

    precision = resolve_precision(args.precision, device)
    model = egovlp.load_model(args.model, config=args.config, device=device).set_precision(precision)
    scores = evaluate_egomcq(model, items, args.videos, args.frames, args.batch_size, args.workers)
    json.dump(scores, sys.stdout)
    sys.stdout.write("\n")
    return 0

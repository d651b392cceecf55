"""MQ samples: a clip's cached rows (one or several feature sets, concatenated) and its primary moment
labels converted from seconds to feature-row coordinates through the sidecar's row times."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from egovlp.errors import InputError
from egovlp.features import read_clip_features
from egovlp.formats.ego4d import read_moments

logger = logging.getLogger(__name__)


@dataclass
class MQSample:
    clip_uid: str
    feats: torch.Tensor  # [T, C1 + C2 + ...], the feature sets concatenated
    set_dims: list[int]  # [C1, C2, ...]
    edges: np.ndarray  # [T + 1] seconds: row k spans edges[k] .. edges[k + 1]
    segments: torch.Tensor  # [G, 2] in rows
    labels: torch.Tensor  # [G] class indices (unknown classes dropped)

    def rows_to_seconds(self, rows: np.ndarray) -> np.ndarray:
        return np.interp(rows, np.arange(len(self.edges)), self.edges)

    def seconds_to_rows(self, seconds: np.ndarray) -> np.ndarray:
        return np.interp(seconds, self.edges, np.arange(len(self.edges)))


def load_feature_sets(folders: list[str], clip_uid: str) -> tuple[torch.Tensor, np.ndarray, list[int]]:
    """Several feature sets of one clip -> rows concatenated on channels [T, C1 + C2 + ...], the row
    times [T, 2] of the first set, and the widths [C1, C2, ...].

    Sets are cut to the shortest row count (different extractors may round the last window differently).
    Per-set projections happen in the model, which gets the widths.
    """
    parts = [read_clip_features(f, clip_uid) for f in folders]
    rows = min(len(p.features) for p in parts)
    if any(len(p.features) != rows for p in parts):
        logger.debug("clip %s: feature sets differ in length; cut to %d rows", clip_uid, rows)
    feats = torch.from_numpy(np.concatenate([p.features[:rows] for p in parts], axis=1))
    return feats, parts[0].row_times[:rows], [p.features.shape[1] for p in parts]


def class_counts(annotations: str | Path) -> Counter:
    """Primary labels per class in an MQ file (the training classes, and the most-frequent baseline)."""
    return Counter(lab.label for clip in read_moments(annotations) for lab in clip.labels if lab.primary)


def load_mq_samples(annotations: str | Path, feature_dirs: list[str], classes: list[str]) -> list[MQSample]:
    """Every clip of the file (with or without labels) -> samples; labels outside `classes` are dropped."""
    index = {name: i for i, name in enumerate(classes)}
    samples, unknown = [], Counter()
    for clip in read_moments(annotations):
        feats, row_times, widths = load_feature_sets(feature_dirs, clip.clip_uid)
        edges = np.append(row_times[:, 0], row_times[-1, 1])
        sample = MQSample(
            clip.clip_uid, feats, widths, edges, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
        )
        segs, labs = [], []
        for lab in clip.labels:
            if not lab.primary:
                continue
            if lab.label not in index:
                unknown[lab.label] += 1
                continue
            segs.append(sample.seconds_to_rows(np.array([lab.start, lab.end])))
            labs.append(index[lab.label])
        if segs:
            sample.segments = torch.tensor(np.stack(segs), dtype=torch.float32)
            sample.labels = torch.tensor(labs, dtype=torch.long)
        samples.append(sample)
    if unknown:
        logger.info("%s: %d labels of classes unseen in training ignored", annotations, sum(unknown.values()))
    if not samples:
        raise InputError(f"{annotations}: no clips")
    return samples


def random_crop(
    sample: MQSample, max_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training crop of at most `max_len` rows; actions are clipped to it and dropped when mostly outside."""
    T = sample.feats.shape[0]
    if T <= max_len:
        return sample.feats, sample.segments, sample.labels
    start = int(torch.randint(0, T - max_len + 1, (1,), generator=generator))
    segs = sample.segments - start
    clipped = segs.clamp(0, max_len)
    inside = (clipped[:, 1] - clipped[:, 0]) >= 0.5 * (segs[:, 1] - segs[:, 0]).clamp_min(1e-6)
    return sample.feats[start : start + max_len], clipped[inside], sample.labels[inside]


def pad_batch(feats: list[torch.Tensor], multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[T_i, C] -> [B, T, C] and mask [B, T], T the longest rounded up to `multiple` (every level divides)."""
    T = max(f.shape[0] for f in feats)
    T = -(-T // multiple) * multiple
    out = torch.zeros(len(feats), T, feats[0].shape[1])
    mask = torch.zeros(len(feats), T, dtype=torch.bool)
    for i, f in enumerate(feats):
        out[i, : f.shape[0]], mask[i, : f.shape[0]] = f, True
    return out, mask

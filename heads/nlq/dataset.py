"""NLQ samples: one per language query, pairing the clip's cached rows with the query's text features.

Clips longer than `max_len` rows are average-pooled down to `max_len` bins (each bin keeps the time span
of the rows it merged), so the model always sees at most `max_len` positions. Ground-truth windows become
a start bin, an end bin and a per-bin highlight target.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from egovlp.errors import InputError
from egovlp.features import ClipFeatures, read_clip_features, read_text_features, text_key
from egovlp.formats.ego4d import read_nlq
from heads.nlq.model import NLQConfig

logger = logging.getLogger(__name__)


@dataclass
class NLQSample:
    clip_uid: str
    annotation_uid: str
    query_idx: int
    video: torch.Tensor  # [T', Cv] after pooling
    times: np.ndarray  # [T', 2] clip seconds of each bin
    text: torch.Tensor  # [L, Ct]
    window: tuple[float, float] | None  # ground truth (None in unannotated files)


def pool_rows(clip: ClipFeatures, max_len: int) -> tuple[torch.Tensor, np.ndarray]:
    """[T, C] -> [min(T, max_len), C] by adaptive average pooling; bins keep their first / last row times."""
    feats = torch.from_numpy(clip.features)  # (T, C)
    T = feats.shape[0]
    if T <= max_len:
        return feats, clip.row_times
    pooled = F.adaptive_avg_pool1d(feats.T[None], max_len)[0].T  # (max_len, C)
    # adaptive pooling bin b spans rows [floor(b*T/n), ceil((b+1)*T/n))
    b = np.arange(max_len)
    first, last = (b * T) // max_len, -((-(b + 1) * T) // max_len) - 1
    times = np.stack([clip.row_times[first, 0], clip.row_times[last, 1]], axis=1)
    return pooled.contiguous(), times


def window_targets(
    times: np.ndarray, window: tuple[float, float], extension: float
) -> tuple[int, int, np.ndarray]:
    """(start bin, end bin, highlight [T']) for a ground-truth window in seconds."""
    starts, ends = times[:, 0], times[:, 1]
    s, e = window
    # the bin holding the time; times past the last bin go to the last bin
    s_idx = int(np.clip(np.searchsorted(starts, s, side="right") - 1, 0, len(times) - 1))
    e_idx = int(np.clip(np.searchsorted(starts, e, side="left") - 1, 0, len(times) - 1))
    e_idx = max(e_idx, s_idx)
    grow = extension * (e - s)
    highlight = ((ends > s - grow) & (starts < e + grow)).astype(np.float32)
    highlight[s_idx : e_idx + 1] = 1.0
    return s_idx, e_idx, highlight


def load_nlq_samples(
    annotations: str | Path,
    features: str | Path,
    text_features: str | Path,
    cfg: NLQConfig,
    require_windows: bool,
) -> tuple[list[NLQSample], int]:
    """All queries with text in the file -> samples; returns (samples, number of skipped textless queries)."""
    clips = read_nlq(annotations)
    texts = read_text_features(text_features, tokens=cfg.use_tokens)
    cache: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
    samples: list[NLQSample] = []
    skipped = 0
    for clip in clips:
        for q in clip.queries:
            if not q.has_query:
                skipped += 1
                continue
            key = text_key(clip.clip_uid, q.annotation_uid, q.query_idx)
            if key not in texts:
                raise InputError(f"{text_features}: no text features for query {key!r} of {annotations}")
            window = None if q.start is None or q.end is None else (q.start, q.end)
            if require_windows and window is None:
                raise InputError(
                    f"{annotations}: query {key!r} has no clip_start_sec / clip_end_sec to train on"
                )
            if clip.clip_uid not in cache:
                cache[clip.clip_uid] = pool_rows(read_clip_features(features, clip.clip_uid), cfg.max_len)
            video, times = cache[clip.clip_uid]
            text = texts[key][: cfg.max_text_len]
            samples.append(
                NLQSample(clip.clip_uid, q.annotation_uid, q.query_idx, video, times, text, window)
            )
    if skipped:
        logger.info("%s: %d language queries without text skipped", annotations, skipped)
    return samples, skipped


def collate(samples: list[NLQSample], cfg: NLQConfig, with_targets: bool) -> dict[str, torch.Tensor]:
    """Pad a list of samples into a batch: video [B, T, Cv], text [B, L, Ct], masks, and targets."""
    B = len(samples)
    T = max(s.video.shape[0] for s in samples)
    L = max(s.text.shape[0] for s in samples)
    video = torch.zeros(B, T, samples[0].video.shape[1])
    text = torch.zeros(B, L, samples[0].text.shape[1])
    video_mask = torch.zeros(B, T, dtype=torch.bool)
    text_mask = torch.zeros(B, L, dtype=torch.bool)
    batch: dict[str, torch.Tensor] = {}
    if with_targets:
        batch["start"] = torch.zeros(B, dtype=torch.long)
        batch["end"] = torch.zeros(B, dtype=torch.long)
        batch["highlight"] = torch.zeros(B, T)
    for i, s in enumerate(samples):
        t, n = s.video.shape[0], s.text.shape[0]
        video[i, :t], video_mask[i, :t] = s.video, True
        text[i, :n], text_mask[i, :n] = s.text, True
        if with_targets:
            assert s.window is not None
            si, ei, hl = window_targets(s.times, s.window, cfg.highlight_extension)
            batch["start"][i], batch["end"][i] = si, ei
            batch["highlight"][i, :t] = torch.from_numpy(hl)
    batch.update(video=video, video_mask=video_mask, text=text, text_mask=text_mask)
    return batch

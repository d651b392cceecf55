"""Text preset: every query of an NLQ file -> CLS `[256]` (and optionally per-token `[L, 256]`) features.

Keys are `egovlp.features.text_key(clip_uid, annotation_uid, query_idx)`, the triple a prediction
file uses. Outputs in OUT (written by `egovlp.features.write_text_features`): `text_cls.pt` (dict key
-> float32 `[256]`), `text_tokens.pt` (dict key -> float32 `[L, 256]`, without [CLS]/[SEP]) with
`--text-tokens`, and `text_cls.json` (model, weights and config hash, precision, source, keys, the
queries skipped for lacking text). A rerun with the same weights, source and precision skips.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm import tqdm

from egovlp.errors import InputError
from egovlp.features import (
    TEXT_SIDECAR,
    model_identity,
    text_complete,
    text_key,
    write_text_features,
)
from egovlp.formats.ego4d import read_nlq

logger = logging.getLogger(__name__)

TEXT_NAME = Path(TEXT_SIDECAR).stem  # the text output's name among extract.outputs.recorded_precisions


def nlq_queries(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """NLQ file -> ({key: query text} in file order, keys of the queries without text)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise InputError(f"{path}: the text preset reads an NLQ annotation file (.json)")
    texts: dict[str, str] = {}
    skipped: list[str] = []
    for clip in read_nlq(path):
        for q in clip.queries:
            key = text_key(clip.clip_uid, q.annotation_uid, q.query_idx)
            if q.has_query:
                texts[key] = q.query
            else:
                skipped.append(key)
    return texts, skipped


def extract_text(
    model,
    nlq_path: str | Path,
    out: Path,
    model_name: str,
    tokens: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    redo: bool = False,
) -> tuple[str, int]:
    """Write the text features of every query in `nlq_path`; returns (status ok|skipped, queries).
    `redo`: compute even when complete (the existing ones are of another precision). Raises OSError
    when the files cannot be written."""
    texts, skipped = nlq_queries(nlq_path)
    keys = list(texts)
    dim = model.cfg.projection_dim
    identity = model_identity(model, model_name)
    source = str(nlq_path)
    if not redo and text_complete(out, keys, dim, tokens, identity, source):
        return "skipped", len(keys)
    cls: dict[str, torch.Tensor] = {}
    tok: dict[str, torch.Tensor] = {}
    for i in tqdm(range(0, len(keys), batch_size), desc="extract text", disable=not progress):
        batch = keys[i : i + batch_size]
        strings = [texts[k] for k in batch]
        emb = model.encode_text(strings).cpu()  # [B, 256]
        for k, v in zip(batch, emb, strict=True):
            cls[k] = v.clone()
        if tokens:
            for k, v in zip(batch, model.encode_text_tokens(strings), strict=True):
                tok[k] = v.cpu().clone()  # [L, 256]
    meta = {
        "preset": "text",
        "source": source,
        **identity.as_meta(),
        "precision": model.precision,
        "dim": dim,
        "num_queries": len(keys),
        "files": {"cls": "text_cls.pt", "tokens": "text_tokens.pt" if tokens else None},
        "keys": keys,
        "skipped_without_text": skipped,
    }
    write_text_features(out, cls, tok if tokens else None, meta)
    return "ok", len(keys)

"""Text preset: every query of an NLQ file -> CLS `[256]` (and optionally per-token `[L, 256]`) features.

Keys are `{clip_uid}/{annotation_uid}_{query_idx}`, the triple a prediction file uses, so a head
finds a query's features without guessing. Outputs in OUT: `text_cls.pt` (dict key -> float32
`[256]`), `text_tokens.pt` (dict key -> float32 `[L, 256]`, without [CLS]/[SEP]) with `--text-tokens`,
and `text_cls.json` (model, config hash, source, keys, the queries skipped for lacking text).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from egovlp.errors import InputError
from egovlp.formats import atomic_write, write_json_atomic
from egovlp.formats.ego4d import read_nlq

logger = logging.getLogger(__name__)

CLS_FILE = "text_cls.pt"
TOKENS_FILE = "text_tokens.pt"
SIDECAR = "text_cls.json"


def query_key(clip_uid: str, annotation_uid: str, query_idx: int) -> str:
    return f"{clip_uid}/{annotation_uid}_{query_idx}"


def nlq_queries(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """NLQ file -> ({key: query text} in file order, keys of the queries without text)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise InputError(f"{path}: the text preset reads an NLQ annotation file (.json)")
    texts: dict[str, str] = {}
    skipped: list[str] = []
    for clip in read_nlq(path):
        for q in clip.queries:
            key = query_key(clip.clip_uid, q.annotation_uid, q.query_idx)
            if q.has_query:
                texts[key] = q.query
            else:
                skipped.append(key)
    return texts, skipped


def _save(obj: dict, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def text_complete(out: Path, keys: list[str], dim: int, tokens: bool, config_hash: str) -> bool:
    """True when the outputs hold every key with the right shapes from the same architecture."""
    try:
        meta = json.loads((out / SIDECAR).read_text(encoding="utf-8"))
        cls = torch.load(out / CLS_FILE, map_location="cpu", weights_only=True)
        if meta.get("config_hash") != config_hash or list(cls) != keys:
            return False
        if any(tuple(v.shape) != (dim,) for v in cls.values()):
            return False
        if tokens:
            tok = torch.load(out / TOKENS_FILE, map_location="cpu", weights_only=True)
            return list(tok) == keys and all(v.ndim == 2 and v.shape[1] == dim for v in tok.values())
        return True
    except Exception:  # noqa: BLE001 - missing / truncated files: redo
        return False


def extract_text(
    model, nlq_path: str | Path, out: Path, model_name: str, tokens: bool = False, batch_size: int = 64,
    progress: bool = True,
) -> tuple[str, int]:  # fmt: skip
    """Write the text features of every query in `nlq_path`; returns (status ok|skipped, queries)."""
    texts, skipped = nlq_queries(nlq_path)
    keys = list(texts)
    dim = model.cfg.projection_dim
    out.mkdir(parents=True, exist_ok=True)
    if text_complete(out, keys, dim, tokens, model.cfg.config_hash()):
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
    if tokens:
        _save(tok, out / TOKENS_FILE)
    _save(cls, out / CLS_FILE)
    meta = {
        "preset": "text",
        "source": str(nlq_path),
        "model": model_name,
        "config_hash": model.cfg.config_hash(),
        "dim": dim,
        "key_format": "{clip_uid}/{annotation_uid}_{query_idx}",
        "num_queries": len(keys),
        "files": {"cls": CLS_FILE, "tokens": TOKENS_FILE if tokens else None},
        "keys": keys,
        "skipped_without_text": skipped,
    }
    write_json_atomic(meta, out / SIDECAR, indent=1)
    return "ok", len(keys)

"""Text features: `text_cls.pt` ({key: [D]}) and `text_tokens.pt` ({key: [L, D]}) keyed by
`text_key(clip_uid, annotation_uid, query_idx)`, the triple a prediction file names, with the sidecar
`text_cls.json` written last."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from egovlp.errors import InputError
from egovlp.features.identity import ModelIdentity, identity_matches
from egovlp.features.sidecar import SCHEMA_VERSION
from egovlp.io import torch_save_atomic, write_json_atomic

TEXT_CLS_FILE = "text_cls.pt"
TEXT_TOKENS_FILE = "text_tokens.pt"
TEXT_SIDECAR = "text_cls.json"
TEXT_KEY_FORMAT = "{clip_uid}/{annotation_uid}_{query_idx}"


def text_key(clip_uid: str, annotation_uid: str, query_idx: int) -> str:
    """The key of one language query in the text feature files: the triple a prediction names."""
    return TEXT_KEY_FORMAT.format(clip_uid=clip_uid, annotation_uid=annotation_uid, query_idx=query_idx)


def write_text_features(
    out: Path, cls: dict[str, torch.Tensor], tokens: dict[str, torch.Tensor] | None, meta: Mapping[str, Any]
) -> None:
    """`text_cls.pt` ({key: [D]}), `text_tokens.pt` ({key: [L, D]}) when given, sidecar last."""
    if tokens is not None:
        torch_save_atomic(tokens, out / TEXT_TOKENS_FILE)
    torch_save_atomic(cls, out / TEXT_CLS_FILE)
    write_json_atomic(
        {"schema": SCHEMA_VERSION, "key_format": TEXT_KEY_FORMAT, **meta}, out / TEXT_SIDECAR, indent=1
    )


def text_complete(
    out: Path, keys: list[str], dim: int, tokens: bool, identity: ModelIdentity, source: str
) -> bool:
    """True when the outputs hold every key with the right shapes, from these weights and this source."""
    try:
        meta = json.loads((out / TEXT_SIDECAR).read_text(encoding="utf-8"))
        same_run = identity_matches(meta, identity) and meta.get("source") == source
        if meta.get("schema") != SCHEMA_VERSION or not same_run:
            return False
        cls = torch.load(out / TEXT_CLS_FILE, map_location="cpu", weights_only=True)
        if list(cls) != keys or any(tuple(v.shape) != (dim,) for v in cls.values()):
            return False
        if tokens:
            tok = torch.load(out / TEXT_TOKENS_FILE, map_location="cpu", weights_only=True)
            return list(tok) == keys and all(v.ndim == 2 and v.shape[1] == dim for v in tok.values())
        return True
    except Exception:  # noqa: BLE001 - missing / truncated files: redo
        return False


def read_text_features(path: str | os.PathLike, tokens: bool = False) -> dict[str, torch.Tensor]:
    """`text_cls.pt` ({key: [D]}) or, with tokens, `text_tokens.pt` ({key: [L, D]}); a folder holding
    them may be given instead of the file. Values come back as float32 [L, D] (CLS as L = 1)."""
    path = Path(path)
    if path.is_dir():
        path = path / (TEXT_TOKENS_FILE if tokens else TEXT_CLS_FILE)
    if not path.is_file():
        raise InputError(f"{path}: text features not found (run `egovlp extract --preset text`)")
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{path}: cannot read text features ({type(err).__name__}: {err})") from None
    if not isinstance(table, dict) or not table:
        raise InputError(f"{path}: expected a non-empty dict {{'{TEXT_KEY_FORMAT}': tensor}}")
    out: dict[str, torch.Tensor] = {}
    for key, value in table.items():
        if not isinstance(value, torch.Tensor) or value.dim() not in (1, 2) or value.numel() == 0:
            raise InputError(f"{path}: entry {key!r} is not a [D] or [L, D] tensor")
        out[str(key)] = (value[None] if value.dim() == 1 else value).float()
    return out

"""Who made a feature file: the weights hash, the architecture hash, and the check that a set of
files comes from one model (features of different weights live in different spaces)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from egovlp.errors import InputError

# sidecar fields that name the model; they must agree across every file of an index or a head
IDENTITY_KEYS = ("weights_hash", "config_hash")


def weights_hash(model_or_state: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor of the state dict (name, dtype, shape, bytes), sorted by name; 16 hex."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        raw = tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8)  # any dtype, bf16 included
        digest.update(memoryview(raw.numpy()))
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    weights_hash: str
    config_hash: str
    family: str = "egovlp"  # EgoVLP | LaViLa | EgoVLPv2 (docs/checkpoints.md); in config_hash too

    def as_meta(self) -> dict[str, str]:
        return {
            "model": self.name,
            "family": self.family,
            "weights_hash": self.weights_hash,
            "config_hash": self.config_hash,
        }


def model_identity(model, name: str) -> ModelIdentity:
    """The identity of a loaded (frozen) EgoVLP model. The weights hash is computed once per model
    object; a model being trained changes its weights, so hash it again with `weights_hash`."""
    cached = getattr(model, "_egovlp_weights_hash", None)
    if cached is None:
        cached = weights_hash(model)
        model._egovlp_weights_hash = cached
    return ModelIdentity(name, cached, model.cfg.config_hash(), model.cfg.family)


def identity_matches(meta: Mapping[str, Any], identity: ModelIdentity) -> bool:
    return all(meta.get(k) == getattr(identity, k) for k in IDENTITY_KEYS)


def check_same_identity(pairs: Iterable[tuple[Path, Mapping[str, Any]]]) -> dict[str, Any]:
    """All (file, sidecar) pairs come from the same weights; returns that identity (model, hashes).

    Features of different weights live in different spaces and cannot share an index or a head.
    """
    first: tuple[Path, Mapping[str, Any]] | None = None
    for path, meta in pairs:
        if first is None:
            first = (path, meta)
            continue
        for key in IDENTITY_KEYS:
            if meta.get(key) != first[1].get(key):
                raise InputError(
                    f"{first[0]} and {path} come from different weights ({key} "
                    f"{first[1].get(key)!r} vs {meta.get(key)!r}); extract them with one model"
                )
    if first is None:
        return {}
    return {k: first[1].get(k) for k in ("model", *IDENTITY_KEYS)}

"""Pieces every head shares: configs (YAML -> dataclass), seeding, atomic checkpoints, and the readers of
the extractor's cached features (`{clip_uid}.pt|.npy` + `{clip_uid}.json` sidecar, `text_cls.pt`).

Feature rows are mapped to clip-relative seconds through the sidecar's `row_times` (DESIGN.md B.6); a
feature file without a sidecar is read at the default 1.875 rows per second, as VSLNet / VSGN read the
published EgoVLP features.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml
from tqdm import tqdm

from egovlp.errors import InputError
from egovlp.formats import atomic_write, write_json_atomic

logger = logging.getLogger(__name__)

DEFAULT_ROWS_PER_SECOND = 1.875
CHECKPOINT_FORMAT = "egovlp-head-v1"

C = TypeVar("C")


# ---- configs ----------------------------------------------------------------------------------------


def load_config(cls: type[C], path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> C:
    """A config dataclass from its defaults, then the YAML file, then non-None `overrides` (CLI options).

    An unknown key in the YAML is an InputError naming the file and the key, so typos do not pass silently.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as err:
            raise InputError(f"{path}: cannot read config ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise InputError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(raw, dict):
            raise InputError(f"{path}: expected a mapping of options, got {type(raw).__name__}")
        values.update(raw)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(cls, values, source=str(path) if path else "options")


def config_from_dict(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise InputError(
            f"{source}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})"
        )
    clean: dict[str, Any] = {}
    for key, value in values.items():
        default = names[key].default
        default = None if default is dataclasses.MISSING else default
        # YAML lists come back as lists; tuples in the dataclass defaults are kept as tuples
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not None and not isinstance(value, type(default)):
            raise InputError(f"{source}: option {key!r} expects {type(default).__name__}, got {value!r}")
        clean[key] = value
    return cls(**clean)


# ---- runtime ----------------------------------------------------------------------------------------


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a torch generator for the data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def progress(iterable: Iterable, desc: str, total: int | None = None, enable: bool = True) -> Iterable:
    """A tqdm bar on stderr (stdout is kept for results)."""
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, disable=not enable, leave=False)


# ---- checkpoints ------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike, task: str, model: torch.nn.Module, config: Any, **extra: Any
) -> None:
    """torch.save {format, task, config, state_dict, extra...} atomically; the config rebuilds the model."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "task": task,
        "config": dataclasses.asdict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


def load_checkpoint(path: str | os.PathLike, task: str) -> dict[str, Any]:
    """Read a head checkpoint (weights_only: plain tensors and python values) and check its task."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise InputError(f"{path}: not a readable head checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not an egovlp head checkpoint (no format {CHECKPOINT_FORMAT!r})")
    if payload.get("task") != task:
        raise InputError(f"{path}: a {payload.get('task')!r} checkpoint, expected {task!r}")
    return payload


# one atomic JSON writer for the whole project
write_json = write_json_atomic


# ---- cached features --------------------------------------------------------------------------------


@dataclass
class ClipFeatures:
    """One clip's feature rows and where each row sits in the clip (seconds)."""

    clip_uid: str
    feats: torch.Tensor  # [T, C] float32
    row_times: np.ndarray  # [T, 2] clip-relative seconds of each row's window
    rows_per_second: float

    @property
    def duration(self) -> float:
        return float(self.row_times[-1, 1])


def _read_tensor(path: Path) -> torch.Tensor:
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            value = torch.from_numpy(np.ascontiguousarray(array))
        else:
            value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(f"{path}: cannot read features ({type(err).__name__}: {err})") from None
    if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[0] == 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise InputError(f"{path}: expected a [T, C] feature tensor with T >= 1, got {shape}")
    if not torch.isfinite(value).all():
        raise InputError(f"{path}: features hold NaN or inf")
    return value.float()


def load_clip_features(folder: str | os.PathLike, clip_uid: str) -> ClipFeatures:
    """`{folder}/{clip_uid}.pt` (or `.npy`) with its `.json` sidecar -> ClipFeatures."""
    folder = Path(folder)
    path = next(
        (folder / f"{clip_uid}{s}" for s in (".pt", ".npy") if (folder / f"{clip_uid}{s}").is_file()), None
    )
    if path is None:
        raise InputError(f"{folder}: no features for clip {clip_uid!r} ({clip_uid}.pt or {clip_uid}.npy)")
    feats = _read_tensor(path)
    sidecar = folder / f"{clip_uid}.json"
    rps = DEFAULT_ROWS_PER_SECOND
    row_times = None
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            rps = float(meta.get("rows_per_second", rps))
            row_times = np.asarray(meta["row_times"], dtype=np.float64) if "row_times" in meta else None
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise InputError(f"{sidecar}: malformed sidecar ({err})") from None
        if row_times is not None and row_times.shape != (feats.shape[0], 2):
            raise InputError(
                f"{sidecar}: row_times has shape {row_times.shape}, the features have {feats.shape[0]} rows"
            )
    if row_times is None:
        k = np.arange(feats.shape[0], dtype=np.float64)
        row_times = np.stack([k / rps, (k + 1) / rps], axis=1)
    return ClipFeatures(clip_uid, feats, row_times, rps)


def load_feature_sets(folders: list[str], clip_uid: str) -> ClipFeatures:
    """Several feature sets of one clip, concatenated on channels ([T, C1 + C2 + ...]).

    Sets are cut to the shortest row count (different extractors may round the last window differently);
    the row times come from the first set. Per-set projections happen in the model, which gets the widths.
    """
    parts = [load_clip_features(f, clip_uid) for f in folders]
    rows = min(p.feats.shape[0] for p in parts)
    if any(p.feats.shape[0] != rows for p in parts):
        logger.debug("clip %s: feature sets differ in length; cut to %d rows", clip_uid, rows)
    feats = torch.cat([p.feats[:rows] for p in parts], dim=1)
    return ClipFeatures(clip_uid, feats, parts[0].row_times[:rows], parts[0].rows_per_second)


def feature_widths(folders: list[str], clip_uid: str) -> list[int]:
    return [load_clip_features(f, clip_uid).feats.shape[1] for f in folders]


def load_text_features(path: str | os.PathLike, tokens: bool = False) -> dict[str, torch.Tensor]:
    """`text_cls.pt` ({key: [D]}) or, with tokens, `text_tokens.pt` ({key: [L, D]}); a folder holding
    them may be given instead of the file. Values come back as [L, D] (CLS as L = 1)."""
    path = Path(path)
    if path.is_dir():
        path = path / ("text_tokens.pt" if tokens else "text_cls.pt")
    if not path.is_file():
        raise InputError(f"{path}: text features not found (run `egovlp extract --preset text`)")
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(f"{path}: cannot read text features ({type(err).__name__}: {err})") from None
    if not isinstance(table, dict) or not table:
        raise InputError(f"{path}: expected a non-empty dict {{'clip_uid/annotation_uid_idx': tensor}}")
    out: dict[str, torch.Tensor] = {}
    for key, value in table.items():
        if not isinstance(value, torch.Tensor) or value.dim() not in (1, 2) or value.numel() == 0:
            raise InputError(f"{path}: entry {key!r} is not a [D] or [L, D] tensor")
        out[str(key)] = (value[None] if value.dim() == 1 else value).float()
    return out


def text_key(clip_uid: str, annotation_uid: str, query_idx: int) -> str:
    """The key of one language query in the text feature files (the extractor's contract)."""
    return f"{clip_uid}/{annotation_uid}_{query_idx}"


# ---- training helpers -------------------------------------------------------------------------------


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int, warmup_steps: int = 0
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on norms, biases and embeddings-like 1-d params) with linear warmup + cosine decay."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_ = (step - warmup_steps) / max(1, total - warmup_steps)
        return 0.5 * (1.0 + float(np.cos(np.pi * min(1.0, progress_))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[list[int]]:
    """Index batches of one epoch: shuffled with `generator`, in order without one."""
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class InputNorm(torch.nn.Module):
    """Per-channel standardization with statistics of the training features, kept as buffers so the
    checkpoint carries them. Features of a weakly trained tower vary little around a large shared offset
    (an untrained text tower's CLS varies ~1% across queries); z-scoring exposes that variation."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, rows: torch.Tensor) -> None:
        """rows [N, dim] of training features."""
        rows = rows.float().reshape(-1, self.mean.shape[0])
        self.mean.copy_(rows.mean(0))
        self.std.copy_(rows.std(0, unbiased=False).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

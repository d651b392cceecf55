"""NLQ / MQ clip features: `{name}.pt` (a float32 `[T, 256]` tensor, what VSLNet / VSGN load) or
`.npy`, optionally `{name}.768.pt|npy` (pre-projection CLS), and the sidecar `{name}.json`, written
last (no sidecar: incomplete). Rows map to clip seconds through the sidecar's `row_times`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egovlp.errors import InputError
from egovlp.features.sidecar import SCHEMA_VERSION, read_sidecar, same_run, sidecar_path
from egovlp.features.text import TEXT_CLS_FILE, TEXT_TOKENS_FILE
from egovlp.io import atomic_write, torch_save_atomic, write_json_atomic
from egovlp.timebase import ROWS_PER_SECOND


def feature_paths(out: Path, name: str, fmt: str, save_768: bool) -> dict[str, Path]:
    ext = "npy" if fmt == "npy" else "pt"
    paths = {"features": out / f"{name}.{ext}", "sidecar": out / f"{name}.json"}
    if save_768:
        paths["features_768"] = out / f"{name}.768.{ext}"
    return paths


def list_feature_files(folder: str | os.PathLike) -> list[Path]:
    """The NLQ/MQ feature files of a folder (`.pt` / `.npy`; not the 768-d copies, not text tables)."""
    root = Path(folder)
    text = {TEXT_CLS_FILE, TEXT_TOKENS_FILE}
    return sorted(
        p
        for p in root.iterdir()
        if p.suffix in (".pt", ".npy") and ".768." not in p.name and p.name not in text and p.is_file()
    )


def save_array(array: np.ndarray, path: Path) -> None:
    """float32 [T, C] -> `.pt` (a plain tensor, what VSLNet / VSGN load) or `.npy`, atomically."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if path.suffix == ".npy":
        with atomic_write(path, "wb") as f:
            np.save(f, array)
    else:
        torch_save_atomic(torch.from_numpy(array).clone(), path)


def read_matrix(path: str | os.PathLike) -> np.ndarray:
    """A `[T, C]` float32 feature matrix with T >= 1 and finite values; InputError names the file."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            value = np.load(path, allow_pickle=False)
        else:
            value = torch.load(path, map_location="cpu", weights_only=True)
            if not torch.is_tensor(value):
                raise InputError(f"{path}: holds a {type(value).__name__}, not a feature tensor")
            value = value.float().numpy()
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - torch / numpy raise many types for a bad file
        raise InputError(f"{path}: cannot read features ({type(err).__name__}: {err})") from None
    if value.ndim != 2 or value.shape[0] == 0:
        raise InputError(f"{path}: expected a [T, C] feature matrix with T >= 1, got {tuple(value.shape)}")
    if not np.isfinite(value).all():
        raise InputError(f"{path}: features hold NaN or inf")
    return np.ascontiguousarray(value, dtype=np.float32)


def _has_shape(path: Path, shape: tuple[int, int]) -> bool:
    try:  # a truncated, zero-byte or foreign file: not done
        return read_matrix(path).shape == shape
    except InputError:
        return False


def write_clip_features(
    paths: dict[str, Path], features: np.ndarray, features_768: np.ndarray | None, meta: Mapping[str, Any]
) -> None:
    """The arrays, then the sidecar: the sidecar's presence marks the output complete."""
    save_array(features, paths["features"])
    if features_768 is not None:
        save_array(features_768, paths["features_768"])
    write_json_atomic({"schema": SCHEMA_VERSION, **meta}, paths["sidecar"])


def clip_complete(
    paths: dict[str, Path], rows: int, dim: int, dim_768: int | None, meta: Mapping[str, Any]
) -> bool:
    """True when the sidecar matches this run (weights, sampling, source) and every array loads right."""
    try:
        found = read_sidecar(paths["sidecar"])
    except InputError:
        return False
    if not same_run(found, meta) or found.get("num_rows") != rows:
        return False
    if not _has_shape(paths["features"], (rows, dim)):
        return False
    return "features_768" not in paths or _has_shape(paths["features_768"], (rows, dim_768 or 0))


@dataclass
class ClipFeatures:
    """One clip's feature rows and where each row sits in the clip (seconds)."""

    name: str
    clip_uid: str
    features: np.ndarray  # [T, C] float32
    row_times: np.ndarray  # [T, 2] clip-relative seconds of each row's window
    rows_per_second: float
    meta: dict[str, Any]

    @property
    def duration(self) -> float:
        return float(self.row_times[-1, 1])


def read_clip_features(folder: str | os.PathLike, clip_uid: str) -> ClipFeatures:
    """`{folder}/{clip_uid}.pt|.npy` with its sidecar; without one, rows at 1.875 per second (as the
    published EgoVLP features are read by VSLNet / VSGN)."""
    folder = Path(folder)
    path = next(
        (folder / f"{clip_uid}{s}" for s in (".pt", ".npy") if (folder / f"{clip_uid}{s}").is_file()), None
    )
    if path is None:
        raise InputError(f"{folder}: no features for clip {clip_uid!r} ({clip_uid}.pt or {clip_uid}.npy)")
    features = read_matrix(path)
    side = sidecar_path(path)
    meta = read_sidecar(side) if side.is_file() else {}
    rps = float(meta.get("rows_per_second") or ROWS_PER_SECOND)
    if meta.get("row_times") is not None:
        row_times = np.asarray(meta["row_times"], dtype=np.float64).reshape(-1, 2)
        if len(row_times) != len(features):
            raise InputError(f"{side}: row_times has {len(row_times)} rows, the features {len(features)}")
    else:
        k = np.arange(len(features), dtype=np.float64)
        row_times = np.stack([k / rps, (k + 1) / rps], axis=1)
    return ClipFeatures(clip_uid, str(meta.get("clip_uid") or clip_uid), features, row_times, rps, meta)

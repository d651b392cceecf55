"""The feature store: the one definition of a cached feature file, its sidecar, and who made it.

Extraction writes through it, the index and the heads read through it (DESIGN.md B.6):

- NLQ/MQ: `{name}.pt` (a float32 `[T, 256]` tensor) or `.npy`, optionally `{name}.768.pt|npy`
  (pre-projection CLS), and the sidecar `{name}.json`, written last (no sidecar: incomplete).
- VQ2D: `{name}.h5` whose attributes are the sidecar; text: `text_cls.pt` / `text_tokens.pt` (dicts
  keyed by `text_key`) with `text_cls.json`.

Every sidecar names the weights (`weights_hash`, over the state dict's tensors), the architecture
(`config_hash`) and the sampling (preset, compat, short side); an output whose sidecar differs from
the current run in any of these is not done, so a rerun recomputes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from egovlp.errors import InputError
from egovlp.io import atomic_write, torch_save_atomic, write_json_atomic

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
GRID_FPS = 30.0  # the Ego4D timeline features are defined on
WINDOW_FRAMES = 16  # 30 fps frames per NLQ/MQ row
ROWS_PER_SECOND = GRID_FPS / WINDOW_FRAMES  # 1.875
VQ_FPS = 5.0  # VQ2D clip frame rate

TEXT_CLS_FILE = "text_cls.pt"
TEXT_TOKENS_FILE = "text_tokens.pt"
TEXT_SIDECAR = "text_cls.json"
TEXT_KEY_FORMAT = "{clip_uid}/{annotation_uid}_{query_idx}"

# sidecar fields that must equal the current run's for an output to count as done
IDENTITY_KEYS = ("weights_hash", "config_hash")
SAMPLING_KEYS = ("preset", "compat", "short_side")
COMPLETE_KEYS = ("schema", *IDENTITY_KEYS, *SAMPLING_KEYS, "source", "video_start_sec", "num_rows")


# ---- who made the features ------------------------------------------------------------------------


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

    def as_meta(self) -> dict[str, str]:
        return {"model": self.name, "weights_hash": self.weights_hash, "config_hash": self.config_hash}


def model_identity(model, name: str) -> ModelIdentity:
    """The identity of a loaded (frozen) EgoVLP model. The weights hash is computed once per model
    object; a model being trained changes its weights, so hash it again with `weights_hash`."""
    cached = getattr(model, "_egovlp_weights_hash", None)
    if cached is None:
        cached = weights_hash(model)
        model._egovlp_weights_hash = cached
    return ModelIdentity(name, cached, model.cfg.config_hash())


def identity_matches(meta: Mapping[str, Any], identity: ModelIdentity) -> bool:
    return all(meta.get(k) == getattr(identity, k) for k in IDENTITY_KEYS)


def check_same_identity(pairs: Iterable[tuple[Path, Mapping[str, Any]]]) -> dict[str, Any]:
    """All (file, sidecar) pairs come from the same weights; returns that identity (model, hashes).

    Features of different weights live in different spaces and cannot share an index or a head.
    """
    first: tuple[Path, Mapping[str, Any]] | None = None
    for path, meta in pairs:
        first = first or (path, meta)
        for key in IDENTITY_KEYS:
            if meta.get(key) != first[1].get(key):
                raise InputError(
                    f"{first[0]} and {path} come from different weights ({key} "
                    f"{first[1].get(key)!r} vs {meta.get(key)!r}); extract them with one model"
                )
    if first is None:
        return {}
    return {k: first[1].get(k) for k in ("model", *IDENTITY_KEYS)}


def text_key(clip_uid: str, annotation_uid: str, query_idx: int) -> str:
    """The key of one language query in the text feature files: the triple a prediction names."""
    return TEXT_KEY_FORMAT.format(clip_uid=clip_uid, annotation_uid=annotation_uid, query_idx=query_idx)


# ---- sidecars ---------------------------------------------------------------------------------------


class ClipSidecar(BaseModel):
    """The typed fields of an NLQ/MQ sidecar; unknown extra fields are kept (forward compatible)."""

    model_config = ConfigDict(extra="allow")

    schema_: int = 1  # files written before the weights hash existed have no schema field
    name: str | None = None
    clip_uid: str | None = None
    video_uid: str | None = None
    source: str | None = None
    video_start_sec: float | None = None
    video_end_sec: float | None = None
    source_fps: float | None = None
    model: str | None = None
    weights_hash: str | None = None
    config_hash: str | None = None
    preset: str | None = None
    compat: bool = False
    short_side: int | None = None
    num_rows: int | None = None
    fps: float | None = None
    window_frames: int | None = None
    rows_per_second: float | None = None
    frames_per_row: int | None = None
    dim: int | None = None
    dim_768: int | None = None
    format: str | None = None
    row_times: list[tuple[float, float]] | None = None
    frame_indices: list[list[int]] | None = None


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """A sidecar JSON, type-checked; InputError names the file and the first bad field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{path}: cannot read sidecar ({err.strerror})") from None
    except ValueError as err:
        raise InputError(f"{path}: sidecar is not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: sidecar must be a JSON object, got {type(raw).__name__}")
    data = {("schema_" if k == "schema" else k): v for k, v in raw.items()}
    try:
        ClipSidecar.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]).replace("schema_", "schema")
        raise InputError(f"{path}: sidecar field {field!r}: {first['msg']}") from None
    return raw


def sidecar_path(feature_file: str | os.PathLike) -> Path:
    """`{name}.pt|.npy` (or `{name}.768.pt`) -> `{name}.json`."""
    path = Path(feature_file)
    name = path.name.split(".")[0] if ".768." in path.name else path.stem
    return path.with_name(f"{name}.json")


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


# ---- arrays -----------------------------------------------------------------------------------------


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


def _same(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    wanted = {"schema": SCHEMA_VERSION, **wanted}
    return all(found.get(k) == wanted.get(k) for k in COMPLETE_KEYS)


def clip_complete(
    paths: dict[str, Path], rows: int, dim: int, dim_768: int | None, meta: Mapping[str, Any]
) -> bool:
    """True when the sidecar matches this run (weights, sampling, source) and every array loads right."""
    try:
        found = read_sidecar(paths["sidecar"])
    except InputError:
        return False
    if not _same(found, meta) or found.get("num_rows") != rows:
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


# ---- VQ2D grids (HDF5 attributes hold the sidecar) ---------------------------------------------------


def h5_attrs(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Sidecar fields -> HDF5 attributes (scalars and strings; None, lists and dicts as JSON text)."""
    out = {"schema": SCHEMA_VERSION}
    for key, value in meta.items():
        out[key] = json.dumps(value) if value is None or isinstance(value, (dict, list, tuple)) else value
    return out


def _h5_value(value: Any) -> Any:
    value = value.decode() if isinstance(value, bytes) else value
    if isinstance(value, str) and value[:1] in ("n", "[", "{"):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value.item() if isinstance(value, np.generic) else value


def h5_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a VQ2D `.h5` as sidecar fields; InputError if it cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return {k: _h5_value(v) for k, v in f.attrs.items()} | {"_rows": int(f["features"].shape[0])}
    except Exception as err:  # noqa: BLE001 - missing, truncated or foreign file
        raise InputError(f"{path}: cannot read VQ2D features ({type(err).__name__}: {err})") from None


def h5_complete(path: str | os.PathLike, rows: int, meta: Mapping[str, Any]) -> bool:
    try:
        found = h5_meta(path)
    except InputError:
        return False
    return bool(found.get("complete")) and found["_rows"] == rows and _same(found, meta)


# ---- text features ----------------------------------------------------------------------------------


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

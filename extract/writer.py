"""Writing stage: feature rows -> files, atomically, plus the checks that let a rerun skip them.

NLQ/MQ: `{name}.pt` (torch.save of a float32 `[T, 256]` tensor, what VSLNet / VSGN load) or
`{name}.npy` (`[T, C]`, what ActionFormer loads), optionally `{name}.768.pt|.npy` (pre-projection
CLS), and the sidecar `{name}.json`, written last: a feature file without its sidecar counts as
incomplete. VQ2D: `{name}.h5` with `features [N, h, w, D]` fp16 (chunked one frame per chunk),
`frame_numbers [N]` (5 fps clip frames), `frame_indices [N]` (frames of the file) and the geometry / model attributes; the rows are streamed into a temp file
in the same folder (a long clip does not fit in memory) that is renamed when complete.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egovlp.formats import atomic_write, write_json_atomic

logger = logging.getLogger(__name__)


def feature_paths(out: Path, name: str, fmt: str, save_768: bool) -> dict[str, Path]:
    ext = "npy" if fmt == "npy" else "pt"
    paths = {"features": out / f"{name}.{ext}", "sidecar": out / f"{name}.json"}
    if save_768:
        paths["features_768"] = out / f"{name}.768.{ext}"
    return paths


def save_array(array: np.ndarray, path: Path) -> None:
    """float32 [T, C] -> `.pt` (a plain tensor) or `.npy`, atomically."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if path.suffix == ".npy":
        with atomic_write(path, "wb") as f:
            np.save(f, array)
    else:
        buf = io.BytesIO()
        torch.save(torch.from_numpy(array).clone(), buf)
        with atomic_write(path, "wb") as f:
            f.write(buf.getvalue())


def load_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    value = torch.load(path, map_location="cpu", weights_only=True)
    if not torch.is_tensor(value):
        raise ValueError(f"{path}: holds a {type(value).__name__}, not a tensor")
    return value.numpy()


def _loads_with_shape(path: Path, shape: tuple[int, int]) -> bool:
    try:
        array = load_array(path)
    except Exception:  # noqa: BLE001 - truncated / zero-byte / foreign files all mean "redo"
        return False
    return tuple(array.shape) == shape and array.dtype == np.float32


def features_complete(paths: dict[str, Path], rows: int, dim: int, dim_768: int | None, meta: dict) -> bool:
    """True when every file exists, loads with the right shape and the sidecar matches this run."""
    try:
        sidecar = json.loads(paths["sidecar"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    keys = ("num_rows", "config_hash", "preset", "compat", "source", "video_start_sec")
    if any(sidecar.get(k) != meta.get(k) for k in keys) or sidecar.get("num_rows") != rows:
        return False
    if not _loads_with_shape(paths["features"], (rows, dim)):
        return False
    return "features_768" not in paths or _loads_with_shape(paths["features_768"], (rows, dim_768 or 0))


class FeatureSink:
    """Collects the rows of one NLQ/MQ output in memory ([T, 256] is small) and writes on commit."""

    def __init__(self, paths: dict[str, Path], rows: int, dim: int, dim_768: int | None, meta: dict) -> None:
        self.paths, self.meta = paths, meta
        self.features = np.zeros((rows, dim), np.float32)
        self.features_768 = np.zeros((rows, dim_768), np.float32) if "features_768" in paths else None
        self.filled = 0

    def write(self, row0: int, outputs: dict[str, np.ndarray]) -> None:
        n = len(outputs["features"])
        self.features[row0 : row0 + n] = outputs["features"]
        if self.features_768 is not None:
            self.features_768[row0 : row0 + n] = outputs["cls_768"]
        self.filled += n

    def commit(self) -> None:
        if self.filled != len(self.features):
            raise RuntimeError(f"{self.paths['features']}: {self.filled} of {len(self.features)} rows filled")
        save_array(self.features, self.paths["features"])
        if self.features_768 is not None:
            save_array(self.features_768, self.paths["features_768"])
        write_json_atomic(self.meta, self.paths["sidecar"])  # last: marks the output complete

    def abort(self) -> None:
        pass


def h5_complete(path: Path, rows: int, meta: dict) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ok = f.attrs.get("complete", False) and f["features"].shape[0] == rows
            return (
                bool(ok)
                and f.attrs.get("config_hash") == meta["config_hash"]
                and len(f["frame_numbers"]) == rows
            )
    except Exception:  # noqa: BLE001 - missing or truncated file: redo
        return False


class H5Sink:
    """Streams VQ2D grids `[n, h, w, D]` (fp16) into a temp HDF5 file; renamed over `path` on commit."""

    def __init__(
        self,
        path: Path,
        rows: int,
        grid: tuple[int, int, int],
        frame_numbers: np.ndarray,
        frame_indices: np.ndarray,
        attrs: dict,
    ) -> None:
        import h5py

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self.path, self.tmp = path, Path(tmp)
        self.file = h5py.File(self.tmp, "w")
        self.features = self.file.create_dataset(
            "features", shape=(rows, *grid), dtype="float16", chunks=(1, *grid)
        )
        self.file.create_dataset("frame_numbers", data=frame_numbers.astype(np.int64))  # 5 fps clip frames
        self.file.create_dataset("frame_indices", data=frame_indices.astype(np.int64))  # frames of the file
        for key, value in attrs.items():
            self.file.attrs[key] = _h5_value(value)
        self.file.attrs["complete"] = False
        self.filled = 0
        self.rows = rows

    def write(self, row0: int, outputs: dict[str, np.ndarray]) -> None:
        grids = outputs["grid"]
        self.features[row0 : row0 + len(grids)] = grids.astype(np.float16)
        self.filled += len(grids)

    def commit(self) -> None:
        if self.filled != self.rows:
            raise RuntimeError(f"{self.path}: {self.filled} of {self.rows} frames filled")
        self.file.attrs["complete"] = True
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _h5_value(value: Any) -> Any:
    """HDF5 attributes take scalars, strings and arrays; None and dicts go in as JSON text."""
    if value is None or isinstance(value, (dict, list)):
        return json.dumps(value)
    return value

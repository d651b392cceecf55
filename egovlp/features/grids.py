"""VQ2D patch grids: one `{name}.h5` per clip whose HDF5 attributes are the sidecar (fp16 grids,
one row per 5 fps frame)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from egovlp.errors import InputError
from egovlp.features.sidecar import SCHEMA_VERSION, same_run


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
    return bool(found.get("complete")) and found["_rows"] == rows and same_run(found, meta)

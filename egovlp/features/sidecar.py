"""The sidecar of an NLQ / MQ feature file: its typed fields, where it lives, and when it marks an
output as done for the current run (same weights, sampling and source)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from egovlp.errors import InputError
from egovlp.features.identity import IDENTITY_KEYS

SCHEMA_VERSION = 2

# sidecar fields that must equal the current run's for an output to count as done
SAMPLING_KEYS = ("preset", "compat", "short_side")
COMPLETE_KEYS = ("schema", *IDENTITY_KEYS, *SAMPLING_KEYS, "source", "video_start_sec", "num_rows")


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


def same_run(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    wanted = {"schema": SCHEMA_VERSION, **wanted}
    return all(found.get(k) == wanted.get(k) for k in COMPLETE_KEYS)

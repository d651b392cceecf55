"""A head's saved model and inference: the model folder (`model.safetensors` + `config.json` with the
format, task, config and the fields that rebuild the model), its one loader, and running a model in
the requested precision for `heads predict`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from egovlp.config import config_from_dict
from egovlp.errors import InputError
from egovlp.io import atomic_path, write_json_atomic
from egovlp.precision import Precision, resolve_precision
from egovlp.training import MODEL_FOLDER
from egovlp.validate import resolve_device, write_error

HEAD_FORMAT = "egovlp-head-v2"  # a model folder; v1 was a single checkpoint.pt
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FINAL = "final"

M = TypeVar("M", bound=torch.nn.Module)


# ---- the model folder -------------------------------------------------------------------------------


def save_head(folder: Path, task: str, model: torch.nn.Module, config: Any, meta: dict[str, Any]) -> None:
    """The head's model folder: weights (safetensors) and config.json {format, task, config, meta...},
    both atomic; the config and meta rebuild the model (nanoGPT's habit: the file alone suffices)."""
    from safetensors.torch import save_file

    try:
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(folder / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        info = {"format": HEAD_FORMAT, "task": task, "config": dataclasses.asdict(config), **meta}
        write_json_atomic(info, folder / CONFIG_NAME, indent=2)
    except OSError as err:
        raise write_error(folder, err) from None


def head_model_folder(path: str | os.PathLike) -> Path:
    """The model folder of `path`: itself, a run folder's final/, or a checkpoint's model/."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found")
    for candidate in (path, path / FINAL, path / MODEL_FOLDER):
        if (candidate / WEIGHTS_NAME).is_file() and (candidate / CONFIG_NAME).is_file():
            return candidate
    raise InputError(
        f"{path}: not an egovlp head checkpoint (expected a run folder, its {FINAL}/, or a checkpoint "
        f"with {WEIGHTS_NAME} and {CONFIG_NAME})"
    )


def load_checkpoint(path: str | os.PathLike, task: str) -> tuple[Path, dict[str, Any]]:
    """(model folder, its config.json) of a head model for `task`, checked: format and task."""
    folder = head_model_folder(path)
    try:
        info = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{folder / CONFIG_NAME}: unreadable ({err})") from None
    if not isinstance(info, dict) or info.get("format") != HEAD_FORMAT:
        raise InputError(f"{folder}: not an egovlp head checkpoint (no format {HEAD_FORMAT!r})")
    if info.get("task") != task:
        raise InputError(f"{folder}: a {info.get('task')!r} checkpoint, expected {task!r}")
    return folder, info


def load_head(
    path: str | os.PathLike,
    task: str,
    config_cls: type,
    build: Callable[[Any, dict[str, Any]], M],
    device: str = "cpu",
) -> tuple[M, dict[str, Any]]:
    """The one model loader: model folder -> config -> `build(cfg, info)` -> weights -> eval mode on
    `device`. Returns the model and the folder's config.json (for the head's meta fields)."""
    from safetensors.torch import load_file

    folder, info = load_checkpoint(path, task)
    cfg = config_from_dict(config_cls, info["config"], source=str(folder / CONFIG_NAME))
    model = build(cfg, info)
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file is the user's input
        raise InputError(f"{folder / WEIGHTS_NAME}: not a readable safetensors file ({err})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(
            f"{folder}: weights do not fit the {task} head ({str(err).splitlines()[0]})"
        ) from None
    return model.to(resolve_device(device)).eval(), info


# ---- inference --------------------------------------------------------------------------------------


def predict_precision(requested: str | None, model: torch.nn.Module) -> Precision:
    """`heads predict --precision` on the device of `model` (auto: bf16 on CUDA, fp32 on the CPU)."""
    return resolve_precision(requested, next(model.parameters()).device, "--precision")


def precision_for_device(requested: str | None, device: str) -> Precision:
    """The same decision for a device name (what a predict's summary line reports)."""
    return resolve_precision(requested, resolve_device(device), "--precision")


def run_model(model: torch.nn.Module, precision: Precision | None, *inputs: Any) -> Any:
    """`model(*inputs)` under `precision`'s autocast, every floating tensor of the output (nested in
    dicts, lists, tuples) back in fp32 for decoding (numpy has no bf16)."""
    with precision.autocast() if precision is not None else contextlib.nullcontext():
        return _to_fp32(model(*inputs))


def _to_fp32(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _to_fp32(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_fp32(v) for v in value)
    return value

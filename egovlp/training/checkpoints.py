"""The one training checkpoint format, written and read by every trainer (pretrain, finetune, heads).

    OUT/checkpoints/step_00000250/
        trainer_state.json    {"format": "egovlp-training-v1", "step", "precision", ...the app's fields}
        training_state.pt     {"model", "optimizer", "scheduler"} state dicts (the main process)
        rng_state_{rank}.pt   python, numpy, torch (+ CUDA) RNG and the run's named generators, per process
        model/                the app's loadable model (what its predict / load_model reads)
    OUT/checkpoints/latest    the newest complete checkpoint's folder name

A checkpoint is written under a temporary name and renamed when complete; `latest` is replaced last,
so a run killed at any moment leaves the previous checkpoint intact. Everything is read back with
`torch.load(weights_only=True)`: tensors and plain python values, never pickled objects.

The functions take an accelerate `Accelerator` when several processes train (barriers, the main
process writes the shared parts, every process its own RNG), or None for a single plain process.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egovlp.errors import InputError
from egovlp.io import atomic_write, torch_save_atomic, write_json_atomic

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "egovlp-training-v1"
CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
TRAINING_STATE = "training_state.pt"
MODEL_FOLDER = "model"


# --- processes -------------------------------------------------------------------------------------


def _rank(accelerator) -> int:
    return 0 if accelerator is None else accelerator.process_index


def _is_main(accelerator) -> bool:
    return accelerator is None or accelerator.is_main_process


def _barrier(accelerator) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def _unwrap(model: torch.nn.Module, accelerator) -> torch.nn.Module:
    return model if accelerator is None else accelerator.unwrap_model(model)


def _grad_scaler(accelerator, scaler):
    """The fp16 loss scaler in use: the one given, else accelerate's (None outside fp16)."""
    return scaler if scaler is not None else getattr(accelerator, "scaler", None)


# --- RNG -------------------------------------------------------------------------------------------


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG this process draws from, as tensors and plain values (weights_only loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Restore what `rng_state` captured."""
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        if name in state["generators"]:
            g.set_state(state["generators"][name])


def _as_tuples(value: Any) -> Any:
    """random.setstate wants tuples all the way down (a JSON or torch round trip may give lists)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


# --- save ------------------------------------------------------------------------------------------


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint `OUT/checkpoints/latest` names, if it is complete."""
    root = Path(output_dir) / CHECKPOINTS
    pointer = root / "latest"
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / TRAINER_STATE).is_file():
            return path
    return None


def save_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep: int,
    save_model: Callable[[Path], None] | None = None,
    accelerator=None,
    generators: Mapping[str, torch.Generator] | None = None,
    scaler=None,
) -> Path:
    """Write `checkpoints/step_{step}` (every process takes part) and keep the newest `keep`.

    `state`: the app's JSON fields for trainer_state.json (precision, epoch, loss ...).
    `save_model(folder)` (main process) writes the app's loadable model into `folder`.
    """
    root = Path(output_dir) / CHECKPOINTS
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    if _is_main(accelerator):
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp_step_*"):  # a killed save's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    _barrier(accelerator)
    torch_save_atomic(rng_state(generators), tmp / f"rng_state_{_rank(accelerator)}.pt")
    if _is_main(accelerator):
        weights = {k: v.detach().cpu() for k, v in _unwrap(model, accelerator).state_dict().items()}
        blob = {"model": weights, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        if _grad_scaler(accelerator, scaler) is not None:
            blob["scaler"] = _grad_scaler(accelerator, scaler).state_dict()
        torch_save_atomic(blob, tmp / TRAINING_STATE)
        if save_model is not None:
            save_model(tmp / MODEL_FOLDER)
        trainer_state = {"format": CHECKPOINT_FORMAT, "step": step, **state}
        write_json_atomic(trainer_state, tmp / TRAINER_STATE, indent=2)
    _barrier(accelerator)
    if _is_main(accelerator):
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        with atomic_write(root / "latest") as f:
            f.write(final.name + "\n")
        # the newest `keep` by step, this one always among them (a fresh run into an old run's
        # folder may find higher steps there)
        others = sorted(p for p in root.glob("step_*") if p.name != final.name)
        for old in others[: max(0, len(others) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier(accelerator)
    return final


# --- load ------------------------------------------------------------------------------------------


def read_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    """trainer_state.json of checkpoint folder `path`, checked: this format, an integer step."""
    file = Path(path) / TRAINER_STATE
    try:
        state = json.loads(file.read_text())
        step = int(state["step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{file}: unreadable trainer state ({err})") from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{file}: not an egovlp training checkpoint (format {state.get('format')!r})")
    return {**state, "step": step}


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    accelerator=None,
    generators: Mapping[str, torch.Generator] | None = None,
    scaler=None,
) -> dict[str, Any]:
    """Load checkpoint folder `path` into the (prepared) model, optimizer, scheduler and this process's
    RNG; returns its trainer state. Weights are copied in place, so a DDP-wrapped model keeps working."""
    path = Path(path)
    state = read_trainer_state(path)
    try:
        blob = torch.load(path / TRAINING_STATE, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for a truncated file
        raise InputError(f"{path / TRAINING_STATE}: unreadable ({type(err).__name__}: {err})") from None
    try:
        _unwrap(model, accelerator).load_state_dict(blob["model"])
    except RuntimeError as err:
        raise InputError(f"{path}: weights do not fit the model ({str(err).splitlines()[0]})") from None
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if "scaler" in blob and _grad_scaler(accelerator, scaler) is not None:
        _grad_scaler(accelerator, scaler).load_state_dict(blob["scaler"])
    rng_file = path / f"rng_state_{_rank(accelerator)}.pt"
    if not rng_file.is_file():  # resumed with more processes than saved: this one starts from rank 0's
        log.warning("%s: no RNG state for this process; using rank 0's", rng_file)
        rng_file = path / "rng_state_0.pt"
    set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True), generators)
    return state


def resume_checkpoint(
    output_dir: str | os.PathLike,
    resume: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    accelerator=None,
    generators: Mapping[str, torch.Generator] | None = None,
    scaler=None,
) -> tuple[Path, dict[str, Any]]:
    """`resume` ("latest" or a checkpoint folder) loaded as `load_checkpoint`; (path, trainer state)."""
    path = latest_checkpoint(output_dir) if resume == "latest" else Path(resume)
    if path is None or not (path / TRAINER_STATE).is_file():
        where = output_dir if resume == "latest" else resume
        raise InputError(f"--resume: no checkpoint found ({where})")
    state = load_checkpoint(path, model, optimizer, scheduler, accelerator, generators, scaler)
    log.info("resumed from %s at step %d", path, state["step"])
    return path, state

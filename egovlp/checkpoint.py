"""Loading, converting and saving EgoVLP weights.

One linear pipeline: read the file (safetensors, or `torch.load(weights_only=True)` with inert
stand-ins for classes the reader does not have) -> unwrap `state_dict` -> strip `module.` ->
fit `temporal_embed` -> strict load that names every missing, unexpected or mis-shaped key.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from egovlp.config import ModelConfig, base_config, load_config, resolve_model_config
from egovlp.errors import CheckpointError, InputError
from egovlp.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# Buffers some transformers versions keep in the state dict; never part of the published weights.
_IGNORED_KEYS = ("text_model.embeddings.position_ids",)


# --- reading the released .pth without its training code --------------------------------------


class _Placeholder:
    """Inert stand-in for a pickled object whose class is not importable here (e.g. the original
    repo's `parse_config.ConfigParser`). Constructed and filled, never executed."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


def _placeholder_for(qualified_name: str) -> type:
    module, _, name = qualified_name.rpartition(".")
    return type(name, (_Placeholder,), {"__module__": module, "__qualname__": name})


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a torch checkpoint with `weights_only=True`; unknown globals become placeholders."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # not a zip checkpoint, truncated, not torch at all
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err})") from None
    stand_ins = [(_placeholder_for(name), name) for name in unsafe]
    if stand_ins:
        log.info("%s: replacing pickled classes with inert placeholders: %s", path, ", ".join(unsafe))
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: could not load checkpoint ({err})") from None


def official_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap a released checkpoint (or a bare state dict) and strip the DDP `module.` prefix."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{source}: no state_dict found")
    out = {}
    for key, value in state.items():
        if not torch.is_tensor(value):
            raise CheckpointError(f"{source}: entry {key!r} is not a tensor")
        out[key.removeprefix("module.")] = value
    return out


# --- fitting a state dict to a model -----------------------------------------------------------


def fit_temporal_embed(state: dict[str, torch.Tensor], num_frames: int) -> dict[str, torch.Tensor]:
    """Truncate a longer `temporal_embed`, zero-pad a shorter one (as the published loader does)."""
    key = "video_model.temporal_embed"
    if key in state:
        te = state[key]
        have = te.shape[1]
        if have > num_frames:
            state[key] = te[:, :num_frames].clone()
        elif have < num_frames:
            pad = te.new_zeros(te.shape[0], num_frames - have, te.shape[2])
            state[key] = torch.cat([te, pad], dim=1)
    return state


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load; one CheckpointError that lists every missing, unexpected and mis-shaped key."""
    state = {k: v for k, v in state.items() if k not in _IGNORED_KEYS}
    expected = {k: v for k, v in model.state_dict().items() if k not in _IGNORED_KEYS}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong))
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if problems:
        raise CheckpointError(f"{source}: does not fit the model config: " + " | ".join(problems))
    model.load_state_dict(state, strict=False)  # strictness checked above, ignoring stray buffers


# --- saving and the public loader --------------------------------------------------------------


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike) -> None:
    """safetensors weights + config.json; `load_model(directory)` restores the model exactly."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if k not in _IGNORED_KEYS
    }
    # the temp file gets the umask's mode before the rename (mkstemp alone would leave it 0600)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json_atomic(model.cfg.to_dict(), directory / CONFIG_NAME, indent=2)


def load_model(
    path: str | os.PathLike,
    config: str | os.PathLike | ModelConfig | None = None,
    device: str | torch.device = "cpu",
):
    """Load EgoVLP from a released `.pth` or a `save_pretrained` directory; eval mode, on `device`.

    `config` None means the base architecture for a .pth and the directory's config.json for a
    directory; otherwise a model YAML path.
    """
    from egovlp.model import EgoVLP

    path = Path(path)
    if path.is_dir():
        weights, cfg_file = path / WEIGHTS_NAME, path / CONFIG_NAME
        if not weights.is_file():
            raise InputError(f"{path}: no {WEIGHTS_NAME} in this directory")
        default = load_config(cfg_file) if cfg_file.is_file() else base_config()
        cfg = resolve_model_config(config, default)
        try:
            state = load_file(weights)
        except Exception as err:
            raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from None
    elif path.is_file():
        cfg = resolve_model_config(config)
        state = official_state_dict(read_checkpoint(path), str(path))
    else:
        raise InputError(f"{path}: no such checkpoint file or directory")

    state = fit_temporal_embed(state, cfg.video.num_frames)
    model = EgoVLP(cfg)
    load_state_dict_strict(model, state, str(path))
    return model.to(device).eval()


def convert_checkpoint(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, config: str | os.PathLike | None = None
) -> ModelConfig:
    """`egovlp convert`: released checkpoint -> safetensors directory. Returns the config used."""
    model = load_model(checkpoint, config=config)
    save_pretrained(model, out_dir)
    return model.cfg

"""Loading, converting and saving EgoVLP, LaViLa and EgoVLPv2 weights (docs/checkpoints.md).

One linear pipeline: read the file (safetensors, or `torch.load(weights_only=True)` with inert
stand-ins for classes the reader does not have) -> unwrap `state_dict` -> strip `module.` ->
detect the family by sentinel keys -> the family's pure key filter and config -> fit
`temporal_embed` -> strict load that names every missing, unexpected or mis-shaped key.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from egovlp.config import ModelConfig, load_config, resolve_model_config
from egovlp.errors import CheckpointError, InputError
from egovlp.families import Family, detect_family, get_family
from egovlp.io import atomic_path, write_json_atomic
from egovlp.video_tower import fit_temporal_embed as fit_embed

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
TOKENIZER_DIR = "tokenizer"  # a RoBERTa tokenizer folder inside a converted model (EgoVLPv2)
CONFIG_NAME = "config.json"
# Buffers some transformers versions keep in the state dict; never part of the published weights.
_IGNORED_KEYS = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")
# inert classes a released file may pickle and that safe loading may build as they are:
# LaViLa stores its training options as an argparse.Namespace (a bag of attributes)
_SAFE_CLASSES = (argparse.Namespace,)


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
    safe = {f"{c.__module__}.{c.__qualname__}": c for c in _SAFE_CLASSES}
    stand_ins = [(_placeholder_for(name), name) for name in unsafe if name not in safe]
    if stand_ins:
        log.info("%s: replacing pickled classes with inert placeholders: %s", path, ", ".join(unsafe))
    try:
        with torch.serialization.safe_globals([*stand_ins, *_SAFE_CLASSES]):
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


def training_options(obj: Any) -> dict[str, Any]:
    """The pickled training options of a released file as a plain dict (LaViLa's `args`
    Namespace; EgoVLP's ConfigParser placeholder gives `{}`): read, never executed."""
    args = obj.get("args") if isinstance(obj, dict) else None
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else {}


def fit_temporal_embed(
    state: dict[str, torch.Tensor], num_frames: int, mode: str = "zeros"
) -> dict[str, torch.Tensor]:
    """Truncate a longer `temporal_embed`; a shorter one zero-padded (EgoVLP) or interpolated
    (LaViLa, EgoVLPv2), as each family's published loader does (`VideoTowerConfig.temporal_fit`)."""
    key = "video_model.temporal_embed"
    if key in state and state[key].shape[1] != num_frames:
        state[key] = fit_embed(state[key], num_frames, mode).clone()
    return state


def fit_pos_embed(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """A spatial `pos_embed [1, 1+P', D]` of another square patch grid (another input size) resampled
    bicubically to `num_patches` patches (timm's helper; the CLS row is kept); as is when it fits."""
    if pos_embed.shape[1] == 1 + num_patches:
        return pos_embed
    from timm.layers import resample_abs_pos_embed

    grid = round(num_patches**0.5)
    if grid * grid != num_patches:
        raise ValueError(f"pos_embed: {num_patches} patches are not a square grid")
    return resample_abs_pos_embed(pos_embed, new_size=(grid, grid), num_prefix_tokens=1)


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


def save_pretrained(
    model: torch.nn.Module, directory: str | os.PathLike, tokenizer: str | os.PathLike | None = None
) -> None:
    """safetensors weights + config.json (which records the family); `load_model(directory)`
    restores the model exactly. `tokenizer` (a RoBERTa tokenizer folder) is copied to
    `directory/tokenizer/`; without it, a model loaded from a folder with one keeps that one."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    source = tokenizer if tokenizer is not None else getattr(model, "tokenizer_dir", None)
    if source is not None and Path(source).resolve() != (directory / TOKENIZER_DIR).resolve():
        copy_tokenizer(source, directory / TOKENIZER_DIR)
    state = {
        k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if k not in _IGNORED_KEYS
    }
    # the temp file gets the umask's mode before the rename (mkstemp alone would leave it 0600)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json_atomic(model.cfg.to_dict(), directory / CONFIG_NAME, indent=2)


def copy_tokenizer(source: str | os.PathLike, target: Path) -> None:
    """A RoBERTa tokenizer folder (checked readable first) copied to `target`, atomically."""
    from egovlp.tokenizer import RobertaTokenizer

    RobertaTokenizer(source)  # one InputError naming the folder when it is not a tokenizer
    source = Path(source)
    source = source.parent if source.is_file() else source
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _config_for(
    family: Family, config: str | os.PathLike | ModelConfig | None, state: dict, options: Mapping, source: str
) -> ModelConfig:
    """The given config (which must be of the file's family) or the family's own from the file."""
    if config is None:
        return family.infer_config(state, options)
    cfg = resolve_model_config(config)
    if cfg.family != family.name:
        raise CheckpointError(
            f"{source}: a {family.title} checkpoint, but the config {cfg.name!r} is of the "
            f"{get_family(cfg.family).title} family"
        )
    return cfg


def load_model(
    path: str | os.PathLike,
    config: str | os.PathLike | ModelConfig | None = None,
    device: str | torch.device = "cpu",
):
    """Load a model of any family from a released `.pth` or a `save_pretrained` directory; eval
    mode, on `device`.

    The family comes from the file's keys. `config` None means the family's architecture read
    from the file (EgoVLP: the base architecture) for a .pth, and the directory's config.json for
    a directory; otherwise a packaged config name or a model YAML path.
    """
    from egovlp.model import EgoVLP

    path = Path(path)
    tokenizer_dir = None
    if path.is_dir():
        weights, cfg_file = path / WEIGHTS_NAME, path / CONFIG_NAME
        if not weights.is_file():
            raise InputError(f"{path}: no {WEIGHTS_NAME} in this directory")
        try:
            state = load_file(weights)
        except Exception as err:
            raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from None
        if cfg_file.is_file():
            stored = load_config(cfg_file)
            # a given config must be of the folder's family (pretrain's `model=` beside `init=DIR`)
            family = get_family(stored.family)
            cfg = stored if config is None else _config_for(family, config, state, {}, str(path))
        else:
            cfg = _config_for(detect_family(state, str(path)), config, state, {}, str(path))
        state = get_family(cfg.family).filter_state_dict(state, cfg)
        if (path / TOKENIZER_DIR).is_dir():
            tokenizer_dir = path / TOKENIZER_DIR
    elif path.is_file():
        raw = read_checkpoint(path)
        state = official_state_dict(raw, str(path))
        family = detect_family(state, str(path))
        cfg = _config_for(family, config, state, training_options(raw), str(path))
        state = family.filter_state_dict(state, cfg)
    else:
        raise InputError(f"{path}: no such checkpoint file or directory")

    state = fit_temporal_embed(state, cfg.video.num_frames, cfg.video.temporal_fit)
    model = EgoVLP(cfg)
    model.tokenizer_dir = tokenizer_dir
    load_state_dict_strict(model, state, str(path))
    return model.to(device).eval()


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> ModelConfig:
    """`egovlp convert`: released checkpoint -> safetensors directory (+ `tokenizer/` when given).
    Returns the config used."""
    model = load_model(checkpoint, config=config)
    save_pretrained(model, out_dir, tokenizer=tokenizer)
    return model.cfg

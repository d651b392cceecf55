"""Configs: the one typed loader for every YAML the project reads, and the model config (docs/design.md A).

Every config is a pydantic dataclass: fields are typed, numeric limits sit on the fields
(`PositiveInt`, ...), unknown keys are refused. `load_config_file(cls, path, overrides)` reads a
YAML mapping, applies dotted `key.sub=value` overrides, and validates; any problem is one
`InputError` naming the file and the key. The model YAML schema is a contract; `load_config` reads it
(or the `config.json` that `save_pretrained` writes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import ConfigDict, PositiveFloat, PositiveInt, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from egovlp.errors import InputError

C = TypeVar("C")

# unknown keys are errors; "1e-4" from a YAML or an override still reads as a float
STRICT_KEYS = ConfigDict(extra="forbid")


# ---- the loader ------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_from_dict(cls: type[C], data: Any, source: str = "config") -> C:
    """Validate a mapping into `cls`; InputError '<source>: option <key>: <what is wrong>'."""
    if not isinstance(data, Mapping):
        raise InputError(
            f"{source}: expected a mapping of options, got {type(data).__name__} {_describe(data)}"
        )
    try:
        return TypeAdapter(cls).validate_python(dict(data))
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            raise InputError(f"{source}: unknown option {key!r}") from None
        got = f" (got {_describe(first['input'])})" if "input" in first else ""
        raise InputError(f"{source}: option {key!r}: {first['msg']}{got}") from None


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """A YAML (or JSON) file whose top level is a mapping; an empty file is an empty mapping."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what} file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read {what} ({getattr(err, 'strerror', None) or err})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as err:
        raise InputError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({' '.join(str(err).split())[:160]})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of options at the top level, got {type(data).__name__}")
    return data


def _field_type(cls: Any, keys: list[str]) -> Any:
    """The annotated type at a dotted path of nested config dataclasses (None when unknown)."""
    tp: Any = cls
    for key in keys:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp, include_extras=False)
        if key not in hints:
            return None
        tp = hints[key]
    return tp


def _parse_override(cls: type, item: str) -> tuple[list[str], Any]:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise InputError(f"override {item!r}: expected key=value (e.g. train.lr=1e-4)")
    keys = key.split(".")
    if _field_type(cls, keys) is str:
        return keys, text  # a string option keeps the text as given ("vit:x.pth", "0123")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    return keys, value


def _merge(base: dict[str, Any], keys: list[str], value: Any, item: str) -> None:
    node = base
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise InputError(f"override {item!r}: {key!r} is not a group of options")
        node = child
    node[keys[-1]] = value


def load_config_file(
    cls: type[C], path: str | os.PathLike | None, overrides: Iterable[str] | Mapping[str, Any] = ()
) -> C:
    """`cls` from its defaults, then the YAML at `path` (if any), then the overrides.

    Overrides are `key.sub=value` strings (values parsed as YAML scalars) or a mapping of already
    typed values (CLI options; None values are skipped).
    """
    data: dict[str, Any] = read_yaml_mapping(path) if path else {}
    source = str(path) if path else "options"
    if isinstance(overrides, Mapping):
        data.update({k: v for k, v in overrides.items() if v is not None})
    else:
        for item in overrides:
            keys, value = _parse_override(cls, item)
            _merge(data, keys, value, item)
        if overrides:
            source = f"{source} + overrides" if path else "overrides"
    return config_from_dict(cls, data, source)


# ---- the model config (contract: configs/model/*.yaml) ---------------------------------------------


@dataclass(config=STRICT_KEYS)
class VideoTowerConfig:
    img_size: PositiveInt = 224
    patch_size: PositiveInt = 16
    embed_dim: PositiveInt = 768
    depth: PositiveInt = 12
    num_heads: PositiveInt = 12
    mlp_ratio: PositiveFloat = 4.0
    num_frames: PositiveInt = 16  # size of temporal_embed; inputs may have F <= num_frames frames
    # --- family options (docs/checkpoints.md); the defaults are EgoVLP's and stay out of config_hash
    ln_pre: bool = False  # LaViLa: a LayerNorm over all tokens after the position embeddings
    patch_bias: bool = True  # LaViLa's patch convolution has no bias
    act: Literal["gelu", "quick_gelu"] = "gelu"  # LaViLa's MLPs use CLIP's QuickGELU
    norm_eps: PositiveFloat = 1e-6  # EgoVLPv2 builds its LayerNorms with torch's 1e-5
    # how temporal_embed meets a clip of another length (at load and for F > num_frames at run
    # time): "zeros" pads (EgoVLP), "interpolate" is bilinear (LaViLa), "interpolate_aligned" is
    # bilinear with align_corners (EgoVLPv2); a longer embedding is always cut
    temporal_fit: Literal["zeros", "interpolate", "interpolate_aligned"] = "zeros"
    # the per-channel mean / std (of [0, 1] RGB) the tower was trained with. Callers always pass
    # ImageNet-normalized frames (B.3); a tower with other constants (LaViLa's) converts them
    # itself. None: ImageNet's (EgoVLP, EgoVLPv2).
    pixel_mean: tuple[float, float, float] | None = None
    pixel_std: tuple[float, float, float] | None = None

    @property
    def patches_per_frame(self) -> int:
        return (self.img_size // self.patch_size) ** 2


@dataclass(config=STRICT_KEYS)
class TextTowerConfig:
    dim: PositiveInt = 768
    n_layers: PositiveInt = 6
    n_heads: PositiveInt = 12
    hidden_dim: PositiveInt = 3072
    vocab_size: PositiveInt = 30522
    max_position_embeddings: PositiveInt = 512  # CLIP: the context length (77)
    # DistilBERT (EgoVLP), CLIP's causal transformer (LaViLa) or RoBERTa (EgoVLPv2)
    kind: Literal["distilbert", "clip", "roberta"] = "distilbert"


FAMILIES = ("egovlp", "lavila", "egovlpv2")
# "egovlp": ReLU -> Linear for text, Linear for video; "matrix": `x @ P` (LaViLa);
# "mlp3": Linear (no bias) -> ReLU -> Linear -> ReLU -> Linear (EgoVLPv2)
PROJECTIONS = ("egovlp", "matrix", "mlp3")

# Options added with the LaViLa / EgoVLPv2 families. At their default (EgoVLP) value they are left
# out of config_hash, so the hash of every EgoVLP config, and the features it names, is unchanged.
_FAMILY_OPTION_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("family",): "egovlp",
    ("projection",): "egovlp",
    ("video", "ln_pre"): False,
    ("video", "patch_bias"): True,
    ("video", "act"): "gelu",
    ("video", "norm_eps"): 1e-6,
    ("video", "temporal_fit"): "zeros",
    ("video", "pixel_mean"): None,
    ("video", "pixel_std"): None,
    ("text", "kind"): "distilbert",
}


@dataclass(config=STRICT_KEYS)
class ModelConfig:
    video: VideoTowerConfig = dataclasses.field(default_factory=VideoTowerConfig)
    text: TextTowerConfig = dataclasses.field(default_factory=TextTowerConfig)
    projection_dim: PositiveInt = 256
    name: str = "egovlp-base"
    family: Literal["egovlp", "lavila", "egovlpv2"] = "egovlp"
    projection: Literal["egovlp", "matrix", "mlp3"] = "egovlp"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Short stable hash of the architecture (weights are hashed by `egovlp.features.weights_hash`)."""
        arch = {k: v for k, v in self.to_dict().items() if k != "name"}
        for path, default in _FAMILY_OPTION_DEFAULTS.items():
            node = arch
            for key in path[:-1]:
                node = node[key]
            if node.get(path[-1]) == default:
                del node[path[-1]]
        return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> ModelConfig:
        return config_from_dict(cls, data, source)


def load_config(path: str | os.PathLike) -> ModelConfig:
    """Read a model YAML (configs/model/*.yaml) or a config.json written by save_pretrained."""
    path = Path(path)
    data = read_yaml_mapping(path, "model config")
    data.setdefault("name", path.stem)
    return config_from_dict(ModelConfig, data, str(path))


def base_config() -> ModelConfig:
    """The published EgoVLP architecture (docs/design.md B.1)."""
    return ModelConfig()


# ---- named configs: packaged YAMLs resolved by name, the way open_clip names its models ------------

CONFIG_KINDS = ("model", "pretrain", "extract", "heads")


def config_dirs() -> list[Path]:
    """Where named configs live: inside the installed package (a wheel puts the top-level
    `configs/` at `egovlp/configs/`), else the source checkout's `configs/` (an editable install or
    a plain checkout). Only one of them: next to an installed package, `../configs` is whatever
    another distribution put in site-packages."""
    here = Path(__file__).resolve().parent
    for root in (here / "configs", here.parent / "configs"):
        if root.is_dir():
            return [root]
    return []


def list_configs(kind: str) -> list[str]:
    """The names of the packaged `kind` configs (`list_configs("model")` -> ["egovlp-base", ...])."""
    if kind not in CONFIG_KINDS:
        raise ValueError(f"config kind {kind!r}: expected one of {', '.join(CONFIG_KINDS)}")
    names: set[str] = set()
    for root in config_dirs():
        names.update(p.stem for p in (root / kind).glob("*.yaml"))
    return sorted(names)


def find_config(kind: str, name_or_path: str | os.PathLike) -> Path:
    """A config file from a path (used as given) or a packaged name (`demo`, `egovlp-base`).

    A string with a path separator or a YAML/JSON suffix is a path; otherwise a name, looked up in
    `config_dirs()/<kind>/<name>.yaml`. An unknown name is an InputError listing the known ones.
    """
    text = os.fspath(name_or_path)
    path = Path(text)
    looks_like_path = os.sep in text or "/" in text or path.suffix in (".yaml", ".yml", ".json")
    if looks_like_path or path.is_file():
        if not path.exists():
            raise InputError(f"{path}: {kind} config not found")
        return path
    for root in config_dirs():
        candidate = root / kind / f"{text}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(list_configs(kind)) or "none packaged"
    raise InputError(f"{text}: no such {kind} config (named configs: {known}; or give a path)")


def resolve_model_config(
    config: str | os.PathLike | ModelConfig | None, default: ModelConfig | None = None
) -> ModelConfig:
    """The one "name, path, ModelConfig or None -> ModelConfig" rule: None is `default` (the base
    architecture when not given), a ModelConfig is itself, a string is a packaged name or a path."""
    if config is None:
        return default if default is not None else base_config()
    if isinstance(config, ModelConfig):
        return config
    return load_config(find_config("model", config))


def list_models() -> list[str]:
    """The packaged model configs `egovlp.create_model(name)` accepts."""
    return list_configs("model")

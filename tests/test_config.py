"""The one config loader: typed fields, limits, unknown keys and bad YAML all name the key and the file."""

from __future__ import annotations

import pytest

from egovlp.config import load_config, load_config_file
from egovlp.errors import InputError
from pretrain.config import PretrainConfig, load_pretrain_config


def _yaml(tmp_path, text: str, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_dotted_overrides_are_typed(tmp_path):
    path = _yaml(tmp_path, "train:\n  steps: 7\n  lr: 1.0e-3\ndata:\n  batch_size: 4\n")
    cfg = load_pretrain_config(str(path), ["train.lr=2e-4", "train.verb=false", "init=vit:x.pth"])
    assert cfg.train.steps == 7 and cfg.data.batch_size == 4
    assert cfg.train.lr == pytest.approx(2e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.verb is False and cfg.init == "vit:x.pth"


@pytest.mark.parametrize(
    "text, words",
    [
        ("train:\n  steps: [2]\n", ["c.yaml", "train.steps"]),
        ("train:\n  stepz: 2\n", ["c.yaml", "train.stepz", "unknown"]),
        ("train:\n  steps: -3\n", ["c.yaml", "train.steps", "greater than 0"]),
        ("train:\n  grad_accum: 0\n", ["c.yaml", "train.grad_accum"]),
        ("num_frames: 4\n", ["c.yaml", "num_frames", "unknown"]),  # a dead option is gone
        ("3\n", ["c.yaml", "mapping"]),
        ("- a\n- b\n", ["c.yaml", "mapping", "list"]),
        ("train: [\n", ["c.yaml", "YAML"]),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, text, words):
    path = _yaml(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_pretrain_config(str(path))
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.steps=-3", "train.steps"),
        ("train.checkpoint_every=-1", "train.checkpoint_every"),
        ("train.lr=abc", "train.lr"),
        ("train.bogus=1", "train.bogus"),
        ("train.mixed_precision=fp8", "mixed_precision"),
    ],
)
def test_override_errors_name_the_key(override, key):
    with pytest.raises(InputError, match=key):
        load_pretrain_config(None, [override])


def test_override_without_equals_sign():
    with pytest.raises(InputError, match="key=value"):
        load_config_file(PretrainConfig, None, ["train.steps"])


def test_model_config_rejects_wrong_types(tmp_path):
    path = _yaml(tmp_path, '{"video": {"img_size": "big"}}', "config.json")
    with pytest.raises(InputError, match=r"config\.json.*video\.img_size"):
        load_config(path)
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_repo_configs_load():
    for name in ("demo", "egovlp-base"):
        assert load_pretrain_config(f"configs/pretrain/{name}.yaml").train.steps > 0
    for name in ("tiny", "tiny-112", "egovlp-base"):
        assert load_config(f"configs/model/{name}.yaml").projection_dim == 256

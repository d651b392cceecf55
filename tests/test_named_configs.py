"""Named configs: `egovlp.list_models()`, `egovlp.create_model(name)` and `find_config(kind, name)`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import egovlp
from egovlp.config import (
    CONFIG_KINDS,
    base_config,
    config_dirs,
    find_config,
    list_configs,
    load_config_file,
    resolve_model_config,
)
from egovlp.demo import DEMO_CONFIG
from egovlp.errors import InputError

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_list_models_is_the_packaged_model_yamls():
    names = egovlp.list_models()
    assert names == sorted(p.stem for p in (REPO_CONFIGS / "model").glob("*.yaml"))
    assert {"egovlp-base", "tiny", "tiny-112"} <= set(names)


def test_every_kind_has_named_configs():
    for kind in CONFIG_KINDS:
        assert list_configs(kind), kind
    assert {"mq", "nlq", "vq2d"} <= set(list_configs("heads"))
    with pytest.raises(ValueError, match="config kind 'models'"):
        list_configs("models")


def test_config_dirs_is_one_folder_holding_every_kind():
    # a checkout (or an editable install) has no egovlp/configs/, so the top-level folder is used
    (root,) = config_dirs()
    assert root == REPO_CONFIGS.resolve()
    assert all((root / kind).is_dir() for kind in CONFIG_KINDS)


def test_create_model_from_a_name_is_the_base_architecture():
    # on the meta device: the full 180M-parameter model is built without allocating or initialising it
    with torch.device("meta"):
        model = egovlp.create_model("egovlp-base", device="meta")
    assert model.cfg.name == "egovlp-base"
    assert model.cfg.config_hash() == base_config().config_hash()
    assert sum(p.numel() for p in model.parameters()) > 150_000_000


def test_create_model_from_a_small_name_runs():
    model = egovlp.create_model("tiny")
    assert model.cfg.name == "tiny" and model.cfg.video.patch_size == 32
    with torch.no_grad():
        emb = model.encode_text(["#C C opens the fridge"])
    assert emb.shape == (1, model.cfg.projection_dim)


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(InputError) as err:
        find_config("model", "egovlp-huge")
    message = str(err.value)
    assert message.startswith("egovlp-huge: no such model config")
    assert all(name in message for name in egovlp.list_models())
    with pytest.raises(InputError, match="no such model config"):
        egovlp.create_model("egovlp-huge")
    heads = ", ".join(list_configs("heads"))
    with pytest.raises(
        InputError, match=rf"^asl: no such heads config \(named configs: {heads}; or give a path\)$"
    ):
        find_config("heads", "asl")


def test_a_path_is_used_as_given(tmp_path, monkeypatch):
    tiny = REPO_CONFIGS / "model" / "tiny.yaml"
    assert find_config("model", tiny) == tiny
    assert find_config("model", str(tiny)) == tiny
    # a relative path is relative to the working folder, not to the packaged configs
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text((REPO_CONFIGS / "model" / "tiny.yaml").read_text())
    assert find_config("model", "mine.yaml") == Path("mine.yaml")
    assert resolve_model_config("mine.yaml").name == "mine"
    with pytest.raises(InputError, match=r"^sub/tiny\.yaml: model config not found"):
        find_config("model", "sub/tiny.yaml")
    with pytest.raises(InputError, match=r"^tiny\.yaml: model config not found"):
        find_config("model", "tiny.yaml")  # a YAML suffix makes it a path, even where a name exists
    assert find_config("model", "tiny").parent.name == "model"  # the name still works from here


def test_the_pretrain_demo_resolves_with_its_model():
    from pretrain.config import PretrainConfig

    path = find_config("pretrain", "demo")
    assert path == REPO_CONFIGS.resolve() / "pretrain" / "demo.yaml"
    assert find_config("pretrain", DEMO_CONFIG) == path  # what `make demo` trains
    cfg = load_config_file(PretrainConfig, path)
    # the packaged pretrain configs name their model, so they work outside a checkout too
    assert resolve_model_config(cfg.model).name == "tiny-112"
    for name in list_configs("pretrain"):
        model = load_config_file(PretrainConfig, find_config("pretrain", name)).model
        assert model in egovlp.list_models(), (name, model)

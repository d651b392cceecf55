"""Released-checkpoint compatibility (DESIGN.md B.2): format, safety, temporal_embed, errors."""

from __future__ import annotations

import json
import pathlib
import pickle
import sys
import types

import pytest
import torch

import egovlp
from egovlp.checkpoint import read_checkpoint
from egovlp.config import ModelConfig
from egovlp.errors import CheckpointError
from egovlp.model import EgoVLP
from tests.conftest import micro_config


def write_official_checkpoint(model: EgoVLP, path, temporal_frames: int | None = None) -> None:
    """Write a checkpoint the way the original training code did: DDP prefix, pickled config object
    of a class from a module (`parse_config`) that the loading side does not have."""
    module = types.ModuleType("parse_config")

    class ConfigParser:
        def __init__(self):
            self.config = {"arch": {"type": "FrozenInTime"}, "n_gpu": 8}
            self.resume = pathlib.PosixPath("/ckpt/resume.pth")  # a stdlib object inside, too

    ConfigParser.__module__ = "parse_config"
    ConfigParser.__qualname__ = "ConfigParser"
    module.ConfigParser = ConfigParser
    sys.modules["parse_config"] = module
    try:
        state = {f"module.{k}": v.clone() for k, v in model.state_dict().items() if "position_ids" not in k}
        if temporal_frames is not None:
            te = state["module.video_model.temporal_embed"]
            extra = torch.randn(1, temporal_frames - te.shape[1], te.shape[2])
            state["module.video_model.temporal_embed"] = torch.cat([te, extra], 1)
        torch.save(
            {
                "arch": "FrozenInTime",
                "epoch": 10,
                "state_dict": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 3e-5}]},
                "monitor_best": 0.5,
                "config": ConfigParser(),
            },
            path,
        )
    finally:
        del sys.modules["parse_config"]


def model_outputs(model: EgoVLP, frames: int = 4):
    torch.manual_seed(1)
    x = torch.randn(2, frames, 3, 32, 32)
    return model.encode_video(x), model.encode_text(["#C C opens the fridge", "a cup"])


@pytest.fixture
def micro_model(micro_cfg):
    torch.manual_seed(0)
    return EgoVLP(micro_cfg).eval()


def test_official_checkpoint_loads_without_its_config_class(tmp_path, micro_model, micro_cfg):
    ckpt = tmp_path / "egovlp.pth"
    write_official_checkpoint(micro_model, ckpt)
    assert "parse_config" not in sys.modules
    with pytest.raises(pickle.UnpicklingError):  # plain safe loading refuses the unknown class
        torch.load(ckpt, weights_only=True)
    raw = read_checkpoint(ckpt)
    assert raw["epoch"] == 10 and type(raw["config"]).__name__ == "ConfigParser"
    loaded = egovlp.load_model(ckpt, config=micro_cfg)
    assert not loaded.training
    for a, b in zip(model_outputs(micro_model), model_outputs(loaded), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_four_frame_model_loads_sixteen_frame_checkpoint(tmp_path, micro_model, micro_cfg):
    ckpt = tmp_path / "egovlp.pth"
    write_official_checkpoint(micro_model, ckpt, temporal_frames=16)
    loaded = egovlp.load_model(ckpt, config=micro_cfg)  # 4 frames: truncated
    assert loaded.video_model.temporal_embed.shape[1] == 4
    torch.testing.assert_close(loaded.video_model.temporal_embed, micro_model.video_model.temporal_embed)
    for a, b in zip(model_outputs(micro_model), model_outputs(loaded), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_longer_model_zero_pads_temporal_embed(tmp_path, micro_model):
    ckpt = tmp_path / "egovlp.pth"
    write_official_checkpoint(micro_model, ckpt)
    cfg8 = micro_config(num_frames=8)
    loaded = egovlp.load_model(ckpt, config=cfg8)
    te = loaded.video_model.temporal_embed
    assert te.shape[1] == 8 and torch.count_nonzero(te[:, 4:]) == 0
    # the first 4 frames behave exactly as in the 4-frame model
    torch.testing.assert_close(model_outputs(loaded)[0], model_outputs(micro_model)[0], rtol=0, atol=0)


def test_wrong_shape_names_the_key(tmp_path, micro_model):
    ckpt = tmp_path / "egovlp.pth"
    write_official_checkpoint(micro_model, ckpt)
    other = micro_config(img_size=48)  # pos_embed for a 6x6 grid instead of 4x4
    with pytest.raises(CheckpointError, match=r"video_model\.pos_embed"):
        egovlp.load_model(ckpt, config=other)


def test_missing_and_unexpected_keys_are_listed(tmp_path, micro_model, micro_cfg):
    state = {f"module.{k}": v for k, v in micro_model.state_dict().items()}
    del state["module.vid_proj.0.bias"]
    state["module.logit_scale"] = torch.tensor(1.0)
    torch.save({"state_dict": state}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as err:
        egovlp.load_model(tmp_path / "broken.pth", config=micro_cfg)
    assert "vid_proj.0.bias" in str(err.value) and "logit_scale" in str(err.value)


def test_not_a_checkpoint_is_a_clear_error(tmp_path, micro_cfg):
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        egovlp.load_model(bad, config=micro_cfg)


def test_convert_then_load_directory_is_bit_identical(tmp_path, micro_model, micro_cfg):
    ckpt = tmp_path / "egovlp.pth"
    write_official_checkpoint(micro_model, ckpt)
    out = tmp_path / "converted"
    egovlp.convert_checkpoint(ckpt, out, config=_write_yaml(tmp_path, micro_cfg))
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["video"]["embed_dim"] == 32
    reloaded = egovlp.load_model(out)
    for a, b in zip(model_outputs(micro_model), model_outputs(reloaded), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_save_pretrained_round_trip(tmp_path, micro_model):
    micro_model.save_pretrained(tmp_path / "m")
    reloaded = egovlp.load_model(tmp_path / "m")
    assert reloaded.cfg == micro_model.cfg
    for a, b in zip(model_outputs(micro_model), model_outputs(reloaded), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not list((tmp_path / "m").glob("*.tmp"))


def _write_yaml(tmp_path, cfg: ModelConfig):
    import yaml

    path = tmp_path / "micro.yaml"
    data = cfg.to_dict()
    data.pop("name")
    path.write_text(yaml.safe_dump(data))
    return path

"""Three checkpoint families behind one loader (docs/checkpoints.md): detection, conversion, parity
with the published code (tensors computed outside this repository), tokenizers, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

import egovlp
from egovlp.checkpoint import read_checkpoint
from egovlp.cli import run
from egovlp.config import ModelConfig, find_config, load_config
from egovlp.errors import CheckpointError, InputError
from egovlp.families import detect_family
from egovlp.families.egovlpv2 import is_fusion_key
from egovlp.transforms import IMAGENET_MEAN, IMAGENET_STD
from tests.families.conftest import FIXTURES, TOKENIZER

FAMILIES = ("lavila", "egovlpv2")


def expected(family: str) -> dict:
    return torch.load(FIXTURES / f"{family}_expected.pt")


def imagenet(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [B, F, 3, H, W] -> what every family's encode_video takes (B.3 normalization)."""
    return TF.normalize(pixels.float().div(255), mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_model_matches_the_published_code(family, converted):
    model = egovlp.load_model(converted[family])
    exp = expected(family)
    assert model.cfg.family == family
    assert json.loads((converted[family] / "config.json").read_text())["family"] == family
    assert torch.equal(model.tokenize(exp["texts"])["input_ids"], exp["input_ids"])
    assert rel_err(model.encode_text(exp["texts"]), exp["text_emb"]) <= 1e-5
    # a 2-frame clip (the 4-frame embedding cut) and an 8-frame one (interpolated as published)
    assert rel_err(model.encode_video(imagenet(exp["pixels_2"])), exp["video_2"]) <= 1e-5
    assert rel_err(model.encode_video(imagenet(exp["pixels_8"])), exp["video_8"]) <= 1e-5


def test_egovlpv2_tokenizer_travels_with_the_converted_folder(converted, monkeypatch):
    monkeypatch.delenv("EGOVLP_TOKENIZER", raising=False)
    folder = converted["egovlpv2"]
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    out = egovlp.load_model(folder).tokenize(["#C C opens the fridge"])
    assert out["input_ids"].shape == (1, 15)  # the trainer's padding="max_length", max_length=15


def test_released_file_loads_directly_and_the_fusion_keys_are_ignored(released, monkeypatch):
    monkeypatch.setenv("EGOVLP_TOKENIZER", str(TOKENIZER))
    raw = read_checkpoint(released["egovlpv2"])["state_dict"]
    fusion = [k for k in raw if is_fusion_key(k.removeprefix("module."))]
    assert any("_i2t" in k for k in fusion) and any("crossattention_t2i" in k for k in fusion)
    assert {"module.cls_token", "module.norm.weight", "module.itm_score.fc.weight"} <= set(fusion)
    assert "module.video_model.cls_token" not in fusion and "module.video_model.norm.weight" not in fusion
    model = egovlp.load_model(released["egovlpv2"], config=FIXTURES / "egovlpv2-tiny.yaml")
    exp = expected("egovlpv2")
    assert rel_err(model.encode_text(exp["texts"]), exp["text_emb"]) <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_without_a_config_the_architecture_is_read_from_the_file(family, released):
    state = {k.removeprefix("module."): v for k, v in read_checkpoint(released[family])["state_dict"].items()}
    assert detect_family(state).name == family
    model = egovlp.load_model(released[family])  # heads: width // 64 (shapes cannot tell)
    given = load_config(FIXTURES / f"{family}-tiny.yaml")
    got = model.cfg.to_dict()
    for section in ("video", "text"):
        for key, value in given.to_dict()[section].items():
            if key not in ("num_heads", "n_heads"):
                assert got[section][key] == pytest.approx(value), (section, key)
    assert model.cfg.projection_dim == given.projection_dim and model.cfg.name == family


def test_lavila_args_namespace_is_read_not_executed(released):
    from egovlp.checkpoint import training_options

    options = training_options(read_checkpoint(released["lavila"]))
    assert options["model"] == "CLIP_OPENAI_TIMESFORMER_BASE" and options["clip_length"] == 4


def test_a_file_of_no_known_family_is_one_line_exit_2(tmp_path, capsys):
    ckpt = tmp_path / "other.pth"
    torch.save({"state_dict": {"module.backbone.conv1.weight": torch.zeros(2, 2)}}, ckpt)
    with pytest.raises(CheckpointError, match="not a checkpoint of a known family"):
        egovlp.load_model(ckpt)
    assert run(["convert", str(ckpt), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "backbone" in err and "other.pth" in err


def test_a_config_of_another_family_is_refused(released):
    with pytest.raises(CheckpointError, match="LaViLa checkpoint.*EgoVLP family"):
        egovlp.load_model(released["lavila"], config="tiny")


def test_missing_roberta_tokenizer_names_the_folder_to_provide(released, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("EGOVLP_TOKENIZER", raising=False)
    out = tmp_path / "v2"
    assert (
        run(
            ["convert", str(released["egovlpv2"]), str(out), "--config", str(FIXTURES / "egovlpv2-tiny.yaml")]
        )
        == 0
    )
    with pytest.raises(InputError, match="tokenizer"):
        egovlp.load_model(out).encode_text(["a cup"])
    assert run(["embed", "--model", str(out), "--text", "a cup"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--tokenizer" in err and "EGOVLP_TOKENIZER" in err
    assert (
        run(["convert", str(released["egovlpv2"]), str(tmp_path / "v2b"), "--tokenizer", str(tmp_path)]) == 2
    )
    assert "no tokenizer.json" in capsys.readouterr().err


def test_clip_bpe_matches_the_published_tokenizer_ids():
    from egovlp.tokenizer import ClipTokenizer

    exp = expected("lavila")
    tok = ClipTokenizer()
    assert tok.vocab_size == 49408 and (tok.encode("")[0], tok.encode("")[-1]) == (49406, 49407)
    assert torch.equal(tok(exp["texts"])["input_ids"], exp["input_ids"])
    assert exp["input_ids"][-1, -1] != 49407  # a text past 77 tokens loses its EOT, as published


def test_roberta_tokenizer_built_with_tokenizers_pads_to_15(tmp_path):
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing

    from egovlp.tokenizer import RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        ["C opens the fridge"] * 5, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>"]
    )
    bpe.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    bpe.save(str(tmp_path / "tokenizer.json"))
    out = RobertaTokenizer(tmp_path)(["C opens the fridge", "the " * 40])
    assert out["input_ids"].shape == (2, 15) and out["input_ids"][0, 0] == 0
    assert out["input_ids"][1, -1] == 2 and out["attention_mask"][0].sum() < 15


def test_egovlp_config_hashes_are_unchanged():
    # the new family options are left out of the hash at their EgoVLP defaults: features and
    # indexes made before the families existed keep their identity
    assert ModelConfig().config_hash() == "98d718aa127a"
    assert load_config(find_config("model", "tiny")).config_hash() == "90bcf9859509"


@pytest.mark.parametrize("name", ["egovlp-base", "lavila-tsf-b", "lavila-tsf-l", "egovlpv2-base"])
def test_named_configs_for_the_released_sizes(name):
    cfg = load_config(find_config("model", name))
    assert name in egovlp.list_models()
    assert cfg.family == name.rsplit("-", 1)[0].replace("-tsf", "")
    width = {"egovlp-base": 256, "lavila-tsf-b": 256, "lavila-tsf-l": 256, "egovlpv2-base": 4096}[name]
    assert cfg.projection_dim == width

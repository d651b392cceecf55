"""Offline tokenizer ids and the public encode_* API."""

from __future__ import annotations

import pytest
import torch

from egovlp.errors import InputError
from egovlp.model import EgoVLP
from egovlp.tokenizer import VOCAB_SIZE, TextTokenizer


def test_tokenizer_ids_match_distilbert_base_uncased():
    tok = TextTokenizer()
    assert tok.vocab_size == VOCAB_SIZE
    assert tok.encode("C opens the fridge") == [101, 1039, 7480, 1996, 16716, 102]
    assert tok.encode("the")[1] == 1996 and tok.encode("the")[0] == 101  # [CLS]
    # and agrees with transformers' own tokenizer loaded from the same local directory
    from transformers import AutoTokenizer

    from egovlp.tokenizer import find_vocab

    reference = AutoTokenizer.from_pretrained(str(find_vocab().parent))
    for text in ["#C C picks up the red cup", "Where did I put the Knife?", "naïve café, 3 cups!"]:
        assert tok.encode(text) == reference(text)["input_ids"]
    batch = tok(["a", "C opens the fridge"])
    assert batch["input_ids"].shape == (2, 6)
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]
    assert batch["input_ids"][0, 3:].tolist() == [0, 0, 0]  # [PAD]


def test_tokenizer_truncates_to_max_length():
    tok = TextTokenizer(max_length=8)
    ids = tok.encode("word " * 50)
    assert len(ids) == 8 and ids[0] == 101 and ids[-1] == 102


def test_tokenizer_from_a_user_directory(tmp_path):
    from egovlp.tokenizer import find_vocab

    (tmp_path / "vocab.txt").write_text(find_vocab().read_text())
    assert TextTokenizer(tmp_path).encode("C opens the fridge") == [101, 1039, 7480, 1996, 16716, 102]
    with pytest.raises(InputError):
        TextTokenizer(tmp_path / "nowhere")


def test_encode_api_shapes_and_contract(micro_cfg):
    torch.manual_seed(0)
    model = EgoVLP(micro_cfg).eval()
    v = model.encode_video(torch.randn(3, 2, 3, 32, 32))
    assert v.shape == (3, 16) and v.dtype == torch.float32
    assert not torch.allclose(v.norm(dim=-1), torch.ones(3))  # not L2-normalized
    t = model.encode_text(["C opens the fridge", "a"])
    assert t.shape == (2, 16)
    tokens = model.encode_text_tokens(["C opens the fridge", "a"])
    assert [x.shape for x in tokens] == [(4, 16), (1, 16)]  # no [CLS]/[SEP]
    # per-token features are txt_proj of the hidden states, the CLS row is encode_text
    with torch.no_grad():
        ids = model.tokenize(["C opens the fridge"])
        hidden = model.text_hidden(ids["input_ids"], ids["attention_mask"])
    torch.testing.assert_close(model.txt_proj(hidden)[0, 1:-1], tokens[0])
    torch.testing.assert_close(model.txt_proj(hidden)[0, 0], t[0], rtol=1e-5, atol=1e-6)
    # padding does not change a text's embedding
    torch.testing.assert_close(model.encode_text(["a"])[0], t[1], rtol=1e-5, atol=1e-5)
    assert model.encode_text([]).shape == (0, 16)


def test_encode_video_rejects_bad_shapes(micro_cfg):
    model = EgoVLP(micro_cfg).eval()
    with pytest.raises(InputError, match="frames"):
        model.encode_video(torch.randn(2, 3, 32, 32))
    with pytest.raises(InputError, match="32x32"):
        model.encode_video(torch.randn(1, 2, 3, 64, 64))
    with pytest.raises(InputError, match="1..4 frames"):
        model.encode_video(torch.randn(1, 5, 3, 32, 32))
    with pytest.raises(InputError, match="single string"):
        model.encode_text("not a list")


def test_text_projection_has_relu_first(micro_cfg):
    model = EgoVLP(micro_cfg)
    assert isinstance(model.txt_proj[0], torch.nn.ReLU) and isinstance(model.txt_proj[1], torch.nn.Linear)
    assert isinstance(model.vid_proj[0], torch.nn.Linear) and len(model.vid_proj) == 1
    keys = set(model.state_dict())
    assert {"txt_proj.1.weight", "vid_proj.0.weight", "video_model.blocks.0.timeattn.qkv.weight"} <= keys
    assert "text_model.transformer.layer.0.attention.q_lin.weight" in keys


def test_base_config_has_the_published_size():
    import egovlp

    model = egovlp.create_model("configs/model/egovlp-base.yaml")
    n = sum(p.numel() for p in model.parameters())
    assert 175e6 < n < 185e6

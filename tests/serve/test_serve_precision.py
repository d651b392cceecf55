"""`egovlp serve --precision`: resolved by egovlp.precision, the weights cast once (bf16 runs on the
CPU too), /info says what ran, and an index whose features were extracted in another precision is
refused unless --allow-foreign-index (as an index of other weights is)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from serve_testlib import write_features

import egovlp
from egovlp.errors import InputError
from egovlp.features import model_identity
from egovlp.precision import resolve_precision
from serve.backend import ModelBackend, load_backend
from tests.conftest import micro_config


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bf16_runs_on_the_cpu_close_to_fp32(micro_model):
    torch.manual_seed(0)
    model = egovlp.create_model(micro_config())  # the session model's weights, cast below
    fp32, bf16 = ModelBackend(micro_model), ModelBackend(model, precision="bf16")
    assert model.dtype == torch.bfloat16 and bf16.precision == "bf16" and fp32.precision == "fp32"
    assert bf16.weights_hash == fp32.weights_hash  # hashed before the cast: one set of weights
    seqs = [fp32.tokenize("#C C opens the fridge"), fp32.tokenize("#C C cuts a tomato into slices")]
    a, b = fp32.embed_tokens(seqs), bf16.embed_tokens(seqs)
    assert b.dtype == np.float32 and not np.array_equal(a, b)  # computed in bf16, returned as fp32
    assert _cosines(a, b).min() > 0.98
    clips = [
        torch.randn(
            fp32.num_frames, 3, fp32.img_size, fp32.img_size, generator=torch.Generator().manual_seed(i)
        )
        for i in range(3)
    ]
    va, vb = fp32.embed_video(clips), bf16.embed_video(clips)
    assert vb.dtype == np.float32 and _cosines(va, vb).min() > 0.98
    assert bf16.info()["precision"] == {"text": "bf16", "video": "bf16", "index_features": None}


@pytest.fixture(scope="module")
def indexes(micro_model, tmp_path_factory):
    """name -> index folder built from features whose sidecars record bf16, fp32, or both."""
    from serve.index.cli import build_index

    ident = model_identity(micro_model, "micro")
    rng = np.random.default_rng(0)
    out = {}
    for name, precisions in {"bf16": ["bf16", "bf16"], "fp32": ["fp32"], "mixed": ["bf16", "fp32"]}.items():
        feats = tmp_path_factory.mktemp(f"feats_{name}")
        for i, precision in enumerate(precisions):
            arr = rng.standard_normal((4, 16)).astype(np.float32)
            write_features(
                feats, f"c{i}", arr, ident.config_hash, weights_hash=ident.weights_hash, precision=precision
            )
        out[name] = tmp_path_factory.mktemp(f"index_{name}")
        build_index(feats, out[name])
    return out


def test_index_records_the_feature_precision(indexes):
    from serve.index.store import read_info

    assert read_info(indexes["bf16"])["precision"] == "bf16"
    assert read_info(indexes["fp32"])["precision"] == "fp32"
    assert read_info(indexes["mixed"])["precision"] is None  # mixed: nothing to hold a model to


def test_index_of_another_precision_needs_the_flag(model_dir, indexes):
    with pytest.raises(InputError, match="allow-foreign-index") as refused:
        load_backend(str(model_dir), str(indexes["bf16"]), "cpu", precision="fp32")
    assert "bf16" in str(refused.value) and "fp32" in str(refused.value)
    forced = load_backend(
        str(model_dir), str(indexes["bf16"]), "cpu", precision="fp32", allow_foreign_index=True
    )
    assert forced.precision == "fp32" and forced.info()["precision"]["index_features"] == "bf16"
    # auto follows the index, so the queries come from the numerics its rows came from
    auto = load_backend(str(model_dir), str(indexes["bf16"]), "cpu")
    assert auto.precision == "bf16" and auto.model.dtype == torch.bfloat16
    assert load_backend(str(model_dir), str(indexes["mixed"]), "cpu", precision="bf16").precision == "bf16"


def test_auto_without_an_index_is_the_precision_policy(model_dir):
    backend = load_backend(str(model_dir), None, "cpu")
    assert backend.precision == resolve_precision("auto", "cpu").name == backend.info()["precision"]["text"]

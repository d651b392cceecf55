"""`egovlp serve` with the tiny LaViLa and EgoVLPv2 models (the index's dimension is the model's),
and features of two families never share a folder, an index or a server."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

import egovlp
from egovlp.cli import run
from tests.extract.conftest import write_index_video

FAMILIES = ("lavila", "egovlpv2")
FRIDGE = "#C C opens the fridge"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """family -> a folder with one 4 s video of its own (so two families' features can meet)."""
    root = tmp_path_factory.mktemp("serve_videos")
    folders = {}
    for family in FAMILIES:
        (root / family).mkdir()
        write_index_video(root / family / f"{family}_vid.mp4", 120)
        folders[family] = root / family
    return folders


@pytest.fixture(scope="module")
def indexed(converted, videos, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """family -> (its MQ feature folder, the index `egovlp index` built over it)."""
    root = tmp_path_factory.mktemp("serve_index")
    out = {}
    for family in FAMILIES:
        feats, index = root / f"{family}_features", root / f"{family}_index"
        argv = [
            "extract",
            "--model",
            str(converted[family]),
            "--preset",
            "mq",
            "--input",
            str(videos[family]),
        ]
        assert run([*argv, "--out", str(feats), "--workers", "0", "--no-progress"]) == 0
        assert run(["index", "--features", str(feats), "--out", str(index)]) == 0
        out[family] = (feats, index)
    return out


def serving(settings):
    """A TestClient on the app `egovlp serve` would build from `settings`, once /ready says 200."""
    from fastapi.testclient import TestClient

    from serve.app import create_app

    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.__enter__()
    deadline = time.time() + 60
    while (ready := client.get("/ready")).status_code != 200:
        assert time.time() < deadline and "failed" not in ready.text, ready.text
        time.sleep(0.05)
    return client


@pytest.mark.parametrize("family", FAMILIES)
def test_serve_embeds_and_searches_at_the_family_width(family, converted, videos, indexed):
    from serve.settings import Settings

    model = egovlp.load_model(converted[family])
    width = model.cfg.projection_dim
    _, index = indexed[family]
    settings = Settings(
        model=str(converted[family]),
        index=str(index),
        allowed_roots=[str(videos[family])],
        max_wait_ms=2.0,
        max_decodes=1,
    )
    client = serving(settings)
    try:
        info = client.get("/info").json()
        assert info["dim"] == width and info["index"]["dim"] == width
        assert info["config_hash"] == info["index"]["config_hash"] == model.cfg.config_hash()

        texts = client.post("/v1/embeddings", json={"input": [FRIDGE, "a knife"], "normalize": False})
        assert texts.status_code == 200, texts.text
        got = np.array([d["embedding"] for d in texts.json()["data"]], np.float32)
        np.testing.assert_allclose(got, model.encode_text([FRIDGE, "a knife"]).numpy(), rtol=1e-4, atol=1e-5)
        assert (
            client.post("/v1/embeddings", json={"input": FRIDGE, "dimensions": 256 + width}).status_code
            == 400
        )

        path = videos[family] / f"{family}_vid.mp4"
        clip = client.post("/v1/video/embeddings", json={"input": {"path": str(path)}, "start": 0, "end": 2})
        assert clip.status_code == 200, clip.text
        vectors = np.array([d["embedding"] for d in clip.json()["data"]], np.float32)
        assert vectors.shape[1] == width
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

        hits = client.post("/v1/search", json={"query": FRIDGE, "k": 2})
        assert hits.status_code == 200, hits.text
        assert len(hits.json()["results"]) == 2
        assert all(h["video_uid"] == f"{family}_vid" for h in hits.json()["results"])
        by_video = client.post(
            "/v1/search", json={"video": {"path": str(path)}, "start": 0, "end": 2, "k": 1}
        )
        assert by_video.status_code == 200, by_video.text
    finally:
        client.__exit__(None, None, None)


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_families_never_share_a_folder_an_index_or_a_server(converted, videos, indexed, tmp_path, capsys):
    from serve.backend import load_backend

    lavila_feats, lavila_index = indexed["lavila"]
    v2_feats, v2_index = indexed["egovlpv2"]
    # one folder holding both families' features: the index refuses it
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for folder in (lavila_feats, v2_feats):
        for file in folder.glob("*_vid.*"):
            (mixed / file.name).write_bytes(file.read_bytes())
    assert {json.loads(p.read_text())["family"] for p in mixed.glob("*.json")} == set(FAMILIES)
    capsys.readouterr()
    assert run(["index", "--features", str(mixed), "--out", str(tmp_path / "mixed_index")]) == 2
    assert re.search(r"(weights|config)_hash", one_error_line(capsys))  # as for two EgoVLP weights
    assert not (tmp_path / "mixed_index" / "index.json").exists()
    # EgoVLPv2 features added to a LaViLa index: refused, the index left as it was
    before = json.loads((lavila_index / "index.json").read_text())
    assert run(["index", "--features", str(v2_feats), "--out", str(lavila_index), "--add"]) == 2
    assert re.search(r"dim 24 differs|config_hash|weights_hash", one_error_line(capsys))
    assert json.loads((lavila_index / "index.json").read_text()) == before
    # a server of one family over the other family's index
    for model, index in (("egovlpv2", lavila_index), ("lavila", v2_index)):
        with pytest.raises(egovlp.InputError, match="--index"):
            load_backend(str(converted[model]), str(index))

"""Every job with every family, on the tiny converted models of tests/families/fixtures: the
feature width and the family travel from the model to what each job writes."""

from __future__ import annotations

import json

import pytest
import torch

import egovlp
from egovlp.cli import run
from tests.extract.conftest import write_index_video, write_nlq

FAMILIES = ("lavila", "egovlpv2")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_index_video(root / "vid.mp4", 120)
    return root


@pytest.mark.parametrize("family", FAMILIES)
def test_embed_prints_the_family_width(family, converted, capsys):
    assert run(["embed", "--model", str(converted[family]), "--text", "#C C opens the fridge"]) == 0
    out = json.loads(capsys.readouterr().out)
    model = egovlp.load_model(converted[family])
    assert out["dim"] == model.cfg.projection_dim
    expected = model.encode_text(["#C C opens the fridge"])[0]
    torch.testing.assert_close(torch.tensor(out["data"][0]["embedding"]), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_extract_nlq_and_text_record_family_and_width(family, converted, videos, tmp_path):
    clip = {"video_uid": "vid", "clip_uid": "clipA", "video_start_sec": 0.0, "video_end_sec": 3.5}
    nlq = write_nlq(tmp_path / "nlq.json", [clip | {"queries": ["where is the cup?"]}])
    model = egovlp.load_model(converted[family])
    width = model.cfg.projection_dim
    out = tmp_path / "nlq"
    common = ["--model", str(converted[family]), "--no-progress"]
    assert (
        run(
            [
                "extract",
                *common,
                "--preset",
                "nlq",
                "--input",
                str(nlq),
                "--videos",
                str(videos),
                "--out",
                str(out),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    meta = json.loads((out / "clipA.json").read_text())
    assert meta["family"] == family and meta["dim"] == width
    feats = torch.load(out / "clipA.pt", weights_only=True)
    assert feats.shape[1] == width
    text_out = tmp_path / "text"
    assert run(["extract", *common, "--preset", "text", "--input", str(nlq), "--out", str(text_out)]) == 0
    cls = torch.load(text_out / "text_cls.pt", weights_only=True)
    torch.testing.assert_close(
        torch.stack(list(cls.values())), model.encode_text(["where is the cup?"]), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_extract_mq_vq2d_and_index_take_the_family_width(family, converted, videos, tmp_path):
    import h5py

    model = egovlp.load_model(converted[family])
    common = ["--model", str(converted[family]), "--no-progress", "--workers", "0"]
    mq = tmp_path / "mq"
    assert run(["extract", *common, "--preset", "mq", "--input", str(videos), "--out", str(mq)]) == 0
    meta = json.loads((mq / "vid.json").read_text())
    assert meta["family"] == family and meta["dim"] == model.cfg.projection_dim
    clip = {"clip_uid": "vqclip", "clip_fps": 5.0, "video_start_sec": 1.0, "video_end_sec": 2.0}
    vq = tmp_path / "vq.json"
    vq.write_text(json.dumps({"videos": [{"video_uid": "vid", "clips": [clip | {"annotations": []}]}]}))
    out = tmp_path / "vq2d"
    assert (
        run(
            [
                "extract",
                *common,
                "--preset",
                "vq2d",
                "--input",
                str(vq),
                "--videos",
                str(videos),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with h5py.File(out / "vqclip.h5", "r") as f:
        assert f["features"].shape[-1] == model.cfg.video.embed_dim
    index = tmp_path / "index"
    assert run(["index", "--features", str(mq), "--out", str(index)]) == 0
    info = json.loads(next(index.glob("*.json")).read_text())
    assert info.get("dim") == model.cfg.projection_dim and info.get("config_hash") == model.cfg.config_hash()

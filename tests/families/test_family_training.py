"""EgoMCQ, pretraining and fine-tuning with the tiny LaViLa and EgoVLPv2 models: each job reads the
family from the converted folder, and training continues in that family's architecture."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

import egovlp
from egovlp.cli import run
from egovlp.formats.egomcq import INTER, INTRA, MCQItem, read_egomcq, write_egomcq

FAMILIES = ("lavila", "egovlpv2")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A small `egovlp synth` world (2 train videos, 1 val video of 30 s, the FHO state-change
    videos), its EgoClip shards of 2-frame clips, and `egomcq3.json`: two of its intra-video
    questions and one inter-video question whose wrong choices are EgoClip clips of the train videos."""
    from pretrain.shards import run_shards

    root = tmp_path_factory.mktemp("family_world")
    argv = ["synth", str(root), "--videos", "3", "--val-videos", "1", "--duration", "30"]
    argv += ["--short-side", "32", "--fho-videos", "2", "--egomask-videos", "3", "--workers", "2"]
    assert run(argv) == 0
    run_shards(
        root / "egoclip.csv",
        root / "videos",
        root / "shards",
        frames=2,
        size=32,
        shard_size=8,
        workers=0,
        progress=False,
    )
    intra = [i for i in read_egomcq(root / "egomcq.json") if i.type == INTRA][:2]
    with open(root / "egoclip.csv", newline="") as f:
        train_clips = list(csv.DictReader(f, delimiter="\t"))[:4]
    answer = intra[0].choices[intra[0].answer]
    inter = MCQItem("inter", 1, intra[0].query, [train_clips[0], answer, *train_clips[1:]], INTER)
    items = [MCQItem(str(k), i.answer, i.query, i.choices, INTRA) for k, i in enumerate(intra)]
    write_egomcq([*items, inter], root / "egomcq3.json")
    return root


def cosines(model, texts: list[str], frames: torch.Tensor) -> torch.Tensor:
    text = torch.nn.functional.normalize(model.encode_text(texts), dim=-1)
    video = torch.nn.functional.normalize(model.encode_video(frames), dim=-1)
    return video @ text.T


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_egomcq_scores_the_family_model(family, converted, world, capsys):
    from egovlp.transforms import load_clip

    items = read_egomcq(world / "egomcq3.json")
    assert sorted(i.type for i in items) == [INTER, INTRA, INTRA]
    argv = ["eval", "egomcq", "--model", str(converted[family]), "--data", str(world / "egomcq3.json")]
    argv += ["--videos", str(world / "videos"), "--frames", "2", "--workers", "0", "--precision", "fp32"]
    assert run(argv) == 0
    scores = json.loads(capsys.readouterr().out)
    # the same answers computed directly with the public API, in the family's own frames
    model = egovlp.load_model(converted[family])
    size, videos = model.cfg.video.img_size, world / "videos"
    correct = {INTER: [], INTRA: []}
    for item in items:
        clips = [
            load_clip(
                videos / f"{c['video_uid']}.mp4", float(c["clip_start"]), float(c["clip_end"]), 2, size=size
            )
            for c in item.choices
        ]
        sims = cosines(model, [item.query["clip_text"]], torch.stack(clips))[:, 0]
        correct[item.type].append(int(sims.argmax()) == item.answer)
    assert (scores["n_inter"], scores["n_intra"]) == (len(correct[INTER]), len(correct[INTRA]))
    assert scores["inter"] == pytest.approx(100 * sum(correct[INTER]) / len(correct[INTER]))
    assert scores["intra"] == pytest.approx(100 * sum(correct[INTRA]) / len(correct[INTRA]))


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> bool:
    return any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith(prefix))


@pytest.mark.parametrize("family", FAMILIES)
def test_pretrain_init_continues_in_the_family(family, converted, world, tmp_path):
    start = egovlp.load_model(converted[family])
    out = tmp_path / "run"
    options = {
        "model": str(converted[family] / "config.json"),
        "init": str(converted[family]),
        "output_dir": str(out),
        "data": {
            "shards": str(world / "shards"),
            "taxonomy": str(world),
            "batch_size": 2,
            "num_workers": 0,
            "shuffle_buffer": 4,
        },
        "train": {
            "steps": 2,
            "lr": 1e-3,
            "warmup_steps": 0,
            "log_every": 1,
            "checkpoint_every": 0,
            "precision": "fp32",
        },
    }
    config = tmp_path / "pretrain.yaml"
    config.write_text(yaml.safe_dump(options))
    assert run(["pretrain", "--config", str(config)]) == 0
    saved = json.loads((out / "final" / "config.json").read_text())
    assert saved["family"] == family
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    trained = egovlp.load_model(out / "final")  # loads as the family it was trained as
    assert trained.cfg.config_hash() == start.cfg.config_hash()
    assert type(trained.text_model) is type(start.text_model)
    before, after = start.state_dict(), trained.state_dict()
    assert before.keys() == after.keys()
    assert _changed(before, after, "video_model.") and _changed(before, after, "text_model.")
    trained.encode_text(["#C C opens the fridge"])  # the tokenizer travels with the trained folder


def test_pretrain_init_refuses_a_model_config_of_another_family(converted, world, tmp_path, capsys):
    # `model:` left at the EgoVLP default beside a LaViLa `init:` is one line, not a shape listing
    options = {"init": str(converted["lavila"]), "output_dir": str(tmp_path / "run")}
    options["data"] = {"shards": str(world / "shards"), "taxonomy": str(world), "num_workers": 0}
    config = tmp_path / "pretrain.yaml"
    config.write_text(yaml.safe_dump(options))
    capsys.readouterr()
    assert run(["pretrain", "--config", str(config), "train.precision=fp32"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "a LaViLa checkpoint" in lines[0] and "EgoVLP family" in lines[0], lines


@pytest.mark.parametrize("family", FAMILIES)
def test_finetune_init_continues_in_the_family(family, converted, world, tmp_path):
    from finetune.model import load_classifier

    start = egovlp.load_model(converted[family])
    out = tmp_path / "ft"
    ann = world / "fho_oscc-pnr_train.json"
    argv = ["finetune", "oscc", "--init", str(converted[family]), "--ann", str(ann), "--out", str(out)]
    argv += ["--videos", str(world / "videos"), *"--epochs 1 --batch-size 2 --lr 1e-3 --workers 0".split()]
    argv += ["--precision", "fp32", "--quiet"]
    assert run(argv) == 0
    model, saved = load_classifier(out / "final")
    assert saved["family"] == family and saved["init"] == str(converted[family])
    # the tower keeps the family's options (LaViLa: ln_pre, bias-free patches, QuickGELU)
    for option in ("ln_pre", "patch_bias", "act", "norm_eps", "temporal_fit", "pixel_mean"):
        assert getattr(model.video_cfg, option) == getattr(start.cfg.video, option), option
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    before = start.video_model.state_dict()
    after = model.video_model.state_dict()
    assert before.keys() == after.keys()
    assert _changed({k: v for k, v in before.items() if k != "temporal_embed"}, after, "")

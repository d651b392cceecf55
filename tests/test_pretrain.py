"""Pretraining end to end on a tiny synthetic world: resume equivalence, NaN stop, EgoMCQ."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import egovlp
from egovlp.formats.egomcq import MCQItem, read_egomcq, write_egomcq
from egovlp.model import EgoVLP
from pretrain import train as train_module
from pretrain.config import load_pretrain_config
from pretrain.egomcq import evaluate_egomcq
from tests.conftest import micro_config


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from egovlp.synth import main as synth_main
    from pretrain.shards import run_shards

    root = tmp_path_factory.mktemp("world")
    assert (
        synth_main(
            [
                str(root),
                "--videos",
                "7",
                "--val-videos",
                "5",
                "--short-side",
                "48",
                "--duration",
                "24",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    run_shards(
        root / "egoclip.csv",
        root / "videos",
        root / "shards",
        frames=2,
        size=40,
        shard_size=8,
        workers=0,
        progress=False,
    )
    cfg = micro_config(num_frames=2).to_dict()
    cfg.pop("name")
    (root / "micro.yaml").write_text(yaml.safe_dump(cfg))
    return root


def config(world: Path, out: Path, **train):
    overrides = [
        f"model={world / 'micro.yaml'}",
        f"output_dir={out}",
        f"data.shards={world / 'shards'}",
        f"data.taxonomy={world}",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.shuffle_buffer=8",
        "train.log_every=1",
        "train.warmup_steps=2",
        "train.lr=1e-3",
    ] + [f"train.{k}={v}" for k, v in train.items()]
    return load_pretrain_config(None, overrides)


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_resume_continues_exactly(world, tmp_path):
    full = tmp_path / "full"
    train_module.train(config(world, full, steps=6, checkpoint_every=3, keep_checkpoints=3))
    reference = losses(full)
    assert sorted(reference) == [1, 2, 3, 4, 5, 6]

    # a run killed after step 3: only its step-3 checkpoint survives
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step_00000003", resumed / "checkpoints" / "step_00000003")
    (resumed / "checkpoints" / "latest").write_text("step_00000003\n")
    # the killed run had logged past its checkpoint, and died writing a row
    with open(resumed / "metrics.jsonl", "w") as f:
        f.write((full / "metrics.jsonl").read_text() + '{"step": 7, "lo')
    summary = train_module.train(config(world, resumed, steps=6, checkpoint_every=3), resume="latest")
    assert summary["start_step"] == 3
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # one row per step after the resume
    again = losses(resumed)
    for step in (4, 5, 6):
        assert again[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-6)
    # the final weights agree too, and checkpoints load with the public loader
    a = egovlp.load_model(full / "final")
    b = egovlp.load_model(resumed / "checkpoints" / "step_00000006" / "model")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)


def test_loss_decreases_on_the_tiny_world(world, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 99.0}\n' * 3)  # an older run's file
    train_module.train(config(world, out, steps=12, checkpoint_every=0, lr=2e-3))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))  # a fresh run starts a new file
    got = losses(out)
    assert sum(got[s] for s in (10, 11, 12)) < sum(got[s] for s in (1, 2, 3))
    # published files get the umask's mode
    assert (out / "final" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("argv", [["--num-processes", "0"], ["--num-processes", "-2"]])
def test_bad_process_count_is_one_line(world, tmp_path, argv, capsys):
    from egovlp.cli import run

    assert run(["pretrain", "--config", str(world / "micro.yaml"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--num-processes" in err[0]


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(world, tmp_path, monkeypatch):
    real = train_module.egonce
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train_module, "egonce", failing)
    out = tmp_path / "nan"
    with pytest.raises(train_module.TrainingDiverged, match="step 3") as err:
        train_module.train(config(world, out, steps=6, checkpoint_every=2))
    assert "step_00000002" in str(err.value)
    ckpt = out / "checkpoints" / "step_00000002"
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    egovlp.load_model(ckpt / "model")  # intact and loadable
    assert not list((out / "checkpoints").glob(".tmp*"))


def three_questions(world: Path, tmp_path: Path) -> Path:
    items = read_egomcq(world / "egomcq.json")
    inter = [i for i in items if i.type == 1][:2]
    intra = [i for i in items if i.type == 2][:1]
    hand = [MCQItem(str(k), it.answer, it.query, it.choices, it.type) for k, it in enumerate(inter + intra)]
    path = tmp_path / "egomcq3.json"
    write_egomcq(hand, path)
    return path


def test_egomcq_on_three_questions_matches_direct_computation(world, tmp_path):
    from egovlp.transforms import load_clip

    torch.manual_seed(0)
    model = EgoVLP(micro_config(num_frames=2)).eval()
    items = read_egomcq(three_questions(world, tmp_path))
    assert len(items) == 3
    scores = evaluate_egomcq(model, items, str(world / "videos"), num_frames=2, batch_size=2, num_workers=0)
    assert (scores["n_inter"], scores["n_intra"]) == (2, 1)

    correct = {1: [], 2: []}
    for item in items:
        clips = torch.stack(
            [
                load_clip(
                    world / "videos" / f"{c['video_uid']}.mp4",
                    float(c["clip_start"]),
                    float(c["clip_end"]),
                    num_frames=2,
                    size=32,
                )
                for c in item.choices
            ]
        )
        sims = torch.nn.functional.cosine_similarity(
            model.encode_video(clips), model.encode_text([item.query["clip_text"]])
        )
        correct[item.type].append(int(sims.argmax()) == item.answer)
    assert scores["inter"] == pytest.approx(100 * sum(correct[1]) / 2)
    assert scores["intra"] == pytest.approx(100 * sum(correct[2]) / 1)

    # split over 2 "processes": the same numbers, each question counted once
    parts = [
        evaluate_egomcq(
            model, items, str(world / "videos"), 2, 2, 0, rank=r, world_size=2, gather=lambda obj: [obj]
        )
        for r in (0, 1)
    ]
    assert parts[0]["n_inter"] + parts[0]["n_intra"] + parts[1]["n_inter"] + parts[1]["n_intra"] == 3


def test_egomcq_cli_prints_the_contract_json(world, tmp_path, capsys):
    from egovlp.cli import run

    torch.manual_seed(0)
    EgoVLP(micro_config(num_frames=2)).save_pretrained(tmp_path / "m")
    code = run(
        [
            "eval",
            "egomcq",
            "--model",
            str(tmp_path / "m"),
            "--data",
            str(three_questions(world, tmp_path)),
            "--videos",
            str(world / "videos"),
            "--frames",
            "2",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"inter", "intra", "n_inter", "n_intra"} and out["n_inter"] == 2
    assert (
        run(
            [
                "eval",
                "egomcq",
                "--model",
                str(tmp_path / "m"),
                "--data",
                str(tmp_path / "missing.json"),
                "--videos",
                str(world / "videos"),
            ]
        )
        == 2
    )


def test_bf16_on_the_cpu_trains_fp32_masters_and_records_it(world, tmp_path):
    out = tmp_path / "bf16"
    summary = train_module.train(config(world, out, steps=2, checkpoint_every=2, precision="bf16"))
    assert summary["precision"] == "bf16" and torch.isfinite(torch.tensor(summary["loss"]))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["precision"] for r in rows] == ["bf16", "bf16"]
    state = json.loads((out / "checkpoints" / "step_00000002" / "trainer_state.json").read_text())
    assert state["precision"] == "bf16"
    model = egovlp.load_model(out / "final")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, fp32 master weights


def test_config_by_name_and_precision_flag(world, tmp_path, capsys):
    from egovlp.cli import run

    demo = load_pretrain_config("demo")
    assert demo.train.precision == "fp32" and "tiny-112" in demo.model
    assert load_pretrain_config(None).model == "tiny"
    # fp16 has no CPU kernels worth using: refused before anything runs, in one line
    pretrain_yaml = tmp_path / "p.yaml"
    pretrain_yaml.write_text("train:\n  steps: 1\n")
    assert run(["pretrain", "--config", str(pretrain_yaml), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fp16" in err[0]
    assert run(["pretrain", "--config", "no-such-config"]) == 2
    assert "no-such-config" in capsys.readouterr().err


def test_cli_summary_records_config_file_and_precision(world, tmp_path):
    from egovlp.cli import run

    out, summary = tmp_path / "cli", tmp_path / "summary.json"
    overrides = [
        f"model={world / 'micro.yaml'}",
        f"output_dir={out}",
        f"data.shards={world / 'shards'}",
        f"data.taxonomy={world}",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.shuffle_buffer=4",
        "train.steps=1",
        "train.checkpoint_every=0",
        "egomcq.data=",
    ]
    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text("train:\n  warmup_steps: 0\n")
    assert (
        run(
            [
                "pretrain",
                "--config",
                str(cfg_file),
                *overrides,
                "--precision",
                "fp32",
                "--summary",
                str(summary),
            ]
        )
        == 0
    )
    got = json.loads(summary.read_text())
    assert got["config_file"] == str(cfg_file) and got["precision"] == "fp32" and got["step"] == 1

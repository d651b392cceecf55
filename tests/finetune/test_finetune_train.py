"""Fine-tuning on the CPU: a train step, exact resume, one metrics row per step, NaN stop, starting points."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from egovlp.config import config_from_dict
from egovlp.formats.fho import read_fho
from finetune import train as train_module
from finetune.config import FinetuneConfig
from finetune.data import clip_label, epoch_order, sample_frames, training_clips
from finetune.model import create_classifier, load_classifier, step_contrast
from tests.conftest import micro_config


def config(world: Path, out: Path, task: str = "oscc", **options) -> FinetuneConfig:
    base = {
        "task": task,
        "ann": str(world / "fho_oscc-pnr_train.json"),
        "videos": str(world / "videos"),
        "output_dir": str(out),
        "model": str(world / "micro.yaml"),
        "epochs": 2,
        "batch_size": 2,
        "lr": 1e-3,
        "num_workers": 0,
        "seed": 3,
    }
    return config_from_dict(FinetuneConfig, {**base, **options}, "test")


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_synthetic_fho_clips_give_balanced_labels(fho_world):
    clips = read_fho(fho_world / "fho_oscc-pnr_train.json")
    assert [clip_label(c, "oscc") for c in clips].count(1) * 2 == len(clips) == 4
    pnr = training_clips(clips, "pnr", "train")
    assert len(pnr) == 2 and all(0 <= clip_label(c, "pnr") < 16 for c in pnr)
    for c in clips:  # 16 frames at 2 fps over the 8 s window, on the official mapping
        frames = sample_frames(c)
        assert (
            frames[0] == c.parent_start_frame
            and [b - a for a, b in zip(frames[:-1], frames[1:], strict=True)] == [15] * 15
        )


def test_train_resume_and_one_metrics_row_per_step(fho_world, tmp_path):
    full = tmp_path / "full"
    summary = train_module.train(config(fho_world, full), progress=False)
    assert (summary["steps"], summary["steps_per_epoch"]) == (4, 2)
    reference = {r["step"]: r["loss"] for r in rows(full)}
    assert sorted(reference) == [1, 2, 3, 4] and all(v > 0 for v in reference.values())
    assert sorted(p.name for p in (full / "checkpoints").glob("step_*")) == ["step_00000002", "step_00000004"]

    # a run killed in epoch 2: its epoch-1 checkpoint, and a log that ran past it and was torn
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step_00000002", resumed / "checkpoints" / "step_00000002")
    (resumed / "checkpoints" / "latest").write_text("step_00000002\n")
    (resumed / "metrics.jsonl").write_text((full / "metrics.jsonl").read_text() + '{"step": 5, "lo')
    train_module.train(config(fho_world, resumed), resume="latest", progress=False)
    got = rows(resumed)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for r in got:
        assert r["loss"] == pytest.approx(reference[r["step"]], rel=1e-5, abs=1e-6)
    a, _ = load_classifier(full)
    b, cfg = load_classifier(resumed / "final")
    assert cfg["task"] == "oscc" and cfg["num_frames"] == 16
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)

    # a fresh run into the same folder starts a new log instead of appending to the old one
    train_module.train(config(fho_world, full, epochs=1), progress=False)
    assert [r["step"] for r in rows(full)] == [1, 2]


def test_non_finite_loss_stops_with_the_last_checkpoint(fho_world, tmp_path, monkeypatch):
    real = train_module.classification_loss
    calls = {"n": 0}

    def failing(model, frames, labels):
        calls["n"] += 1
        loss, logits = real(model, frames, labels)
        return (loss * float("nan") if calls["n"] == 3 else loss), logits

    monkeypatch.setattr(train_module, "classification_loss", failing)
    out = tmp_path / "nan"
    with pytest.raises(train_module.TrainingDiverged, match="step 3") as err:
        train_module.train(config(fho_world, out, task="pnr", batch_size=1), progress=False)
    assert "step_00000002" in str(err.value)
    load_classifier(out / "checkpoints" / "step_00000002" / "model")  # intact and loadable


def test_starting_points(tmp_path):
    torch.manual_seed(0)
    from egovlp.model import EgoVLP

    src = EgoVLP(micro_config(num_frames=4))
    src.save_pretrained(tmp_path / "converted")
    # from a converted folder: the tower's weights, temporal_embed zero-padded to 16 frames
    model = create_classifier("pnr", str(tmp_path / "converted"))
    assert model.head_type == "step" and model.video_cfg.num_frames == 16
    assert model(torch.randn(1, 16, 3, 32, 32)).shape == (1, 16)  # one logit per input frame
    te = model.video_model.temporal_embed
    torch.testing.assert_close(te[:, :4], src.video_model.temporal_embed)
    assert te[:, 4:].abs().sum() == 0
    torch.testing.assert_close(
        model.video_model.blocks[1].mlp.fc2.weight, src.video_model.blocks[1].mlp.fc2.weight
    )
    # from a released-style .pth with its model YAML, at another input size (pos_embed resampled)
    state = {f"module.{k}": v for k, v in src.state_dict().items() if "position_ids" not in k}
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "egovlp.pth")
    import yaml

    cfg = micro_config(num_frames=4).to_dict()
    cfg.pop("name")
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(cfg))
    model = create_classifier("oscc", str(tmp_path / "egovlp.pth"), str(tmp_path / "micro.yaml"), img_size=48)
    assert model.head.out_features == 2 and model.video_model.pos_embed.shape[1] == 1 + 36
    torch.testing.assert_close(
        model.video_model.patch_embed.proj.weight, src.video_model.patch_embed.proj.weight
    )
    out = model(torch.randn(2, 16, 3, 48, 48))
    assert out.shape == (2, 2)
    # from a timm image ViT: its patch embedding, time attention starting as a no-op
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=0)
    torch.save(vit.state_dict(), tmp_path / "vit.pt")
    model = create_classifier("oscc", f"vit:{tmp_path / 'vit.pt'}", str(tmp_path / "micro.yaml"))
    torch.testing.assert_close(model.video_model.patch_embed.proj.weight, vit.patch_embed.proj.weight)
    assert model.video_model.blocks[0].timeattn.qkv.weight.abs().sum() == 0


def test_processes_share_each_epoch_evenly():
    both = epoch_order(9, epoch=1, seed=0, rank=0, world_size=2) + epoch_order(9, 1, 0, 1, 2)
    assert len(both) == 8 and len(set(both)) == 8
    assert epoch_order(9, 1, 0) == epoch_order(9, 1, 0) != epoch_order(9, 2, 0)


def test_pretrained_folder_at_another_input_size(tmp_path):
    """A pretraining run's final/ (like demo-output/pretrain/final: 4 frames, its own img_size) fine-tunes
    at a smaller input: pos_embed resampled to the new patch grid, CLS position and the rest kept."""
    torch.manual_seed(0)
    from egovlp.model import EgoVLP

    src = EgoVLP(micro_config(num_frames=4))  # 32 px, 8 px patches: a 4x4 grid
    grid = src.video_model.pos_embed.detach().clone()  # (1, 1 + 16, D)
    ramp = torch.arange(4.0).repeat(4)  # the patch's column, row-major: a ramp along x, flat along y
    grid[0, 1:] = ramp[:, None] * torch.linspace(-1, 1, grid.shape[-1])
    src.video_model.pos_embed.data.copy_(grid)
    src.save_pretrained(tmp_path / "final")
    model = create_classifier("pnr", str(tmp_path / "final"), img_size=24)  # a 3x3 grid
    pos = model.video_model.pos_embed.detach()
    assert pos.shape == (1, 1 + 9, grid.shape[-1]) and model.video_cfg.img_size == 24
    torch.testing.assert_close(pos[0, 0], grid[0, 0])  # the CLS position is not resampled
    cols = pos[0, 1:].reshape(3, 3, -1)[..., -1]  # (rows, cols) of the last channel
    torch.testing.assert_close(cols, cols[:1].expand(3, 3))  # still flat along y
    assert bool((cols[0, 1:] > cols[0, :-1]).all()) and cols[0, 0] < 1 < cols[0, 2] < 3  # still a ramp in x
    torch.testing.assert_close(model.video_model.temporal_embed[:, :4], src.video_model.temporal_embed)
    assert model(torch.randn(2, 16, 3, 24, 24)).shape == (2, 16)


def test_pnr_step_contrast_by_hand():
    # one channel, 4 frames 1, 1, 5, 5: frames i.. minus frames ..i-1 peaks where the look steps
    f = torch.tensor([1.0, 1.0, 5.0, 5.0]).reshape(1, 4, 1)
    expected = torch.tensor([0.0, 11 / 3 - 1, 5 - 1, 5 - 7 / 3]).reshape(1, 4, 1)
    torch.testing.assert_close(step_contrast(f), expected)
    assert int(step_contrast(f)[0, :, 0].argmax()) == 2


def test_precision_flag_is_recorded_and_fp16_refused_on_the_cpu(fho_world, tmp_path, capsys):
    from egovlp.cli import run

    base = [
        "finetune",
        "oscc",
        "--ann",
        str(fho_world / "fho_oscc-pnr_train.json"),
        "--videos",
        str(fho_world / "videos"),
        "--model",
        str(fho_world / "micro.yaml"),
        "--workers",
        "0",
        "--quiet",
    ]
    assert run([*base, "--out", str(tmp_path / "a"), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fp16" in err[0]
    summary = tmp_path / "s.json"
    argv = [*base, "--out", str(tmp_path / "b"), "--precision", "bf16", "--epochs", "1", "--batch-size", "4"]
    assert run([*argv, "--summary", str(summary)]) == 0
    assert json.loads(summary.read_text())["precision"] == "bf16"
    assert {r["precision"] for r in rows(tmp_path / "b")} == {"bf16"}

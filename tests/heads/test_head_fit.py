"""The shared head training loop stops on a non-finite loss, like the pretraining and fine-tuning loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_head_data import one_thread

from egovlp.cli import run
from egovlp.errors import TrainingDiverged
from heads.common import HeadConfig, fit


def _fit(model: torch.nn.Module, scale: float) -> list[float]:
    """Three epochs over 4 samples of a loss `scale` times the model's mean output."""

    def loss_of(idx):
        return model(torch.ones(len(idx), 2)).mean() * scale

    cfg = HeadConfig(epochs=3, batch_size=2)
    return fit(model, cfg, 4, loss_of, torch.Generator().manual_seed(0), "t", show_progress=False)


def test_finite_losses_train():
    model = torch.nn.Linear(2, 1)
    before = model.weight.detach().clone()
    losses = _fit(model, 1.0)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before, model.weight.detach())


def test_nan_loss_stops_before_the_weights_change():
    model = torch.nn.Linear(2, 1)
    before = model.weight.detach().clone()
    with pytest.raises(TrainingDiverged, match="at step 1"):
        _fit(model, float("nan"))
    assert torch.equal(before, model.weight.detach())


def test_dispatcher_reports_a_diverged_run_in_one_line(monkeypatch, capsys):
    import heads.cli

    message = "non-finite loss (nan) at step 3; stopping (no checkpoint written yet)"

    def diverge(argv):
        raise TrainingDiverged(message)

    monkeypatch.setattr(heads.cli, "main", diverge)
    assert run(["heads", "train", "nlq"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"egovlp heads: {message}"]


# ---- the heads on egovlp.training: resume, precision, the config they ran ---------------------------

_ = one_thread  # a fixture, used by name below

NLQ_FAST = {"hidden": 16, "num_heads": 2, "conv_layers": 1, "batch_size": 4, "lr": 3e-3, "dropout": 0.1}


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_head_resume_from_an_epoch_checkpoint_equals_the_full_run(tmp_path, one_thread):
    import json
    import shutil

    from test_head_data import make_nlq_world

    from heads.nlq.train import train_nlq

    w = make_nlq_world(tmp_path / "w", clips=2, rows=24)
    opts = {**NLQ_FAST, "epochs": 4, "checkpoint_every": 2, "keep_checkpoints": 2}
    full = train_nlq(
        w["ann"], w["features"], w["text"], tmp_path / "full", overrides=opts, show_progress=False
    )
    steps = sorted(p.name for p in (tmp_path / "full" / "checkpoints").glob("step_*"))
    assert len(steps) == 2  # after epochs 2 and 4, in the one egovlp.training format
    state = json.loads((tmp_path / "full" / "checkpoints" / steps[0] / "trainer_state.json").read_text())
    assert state["format"] == "egovlp-training-v1" and state["epoch"] == 2 and state["precision"] == "fp32"

    # a run killed in epoch 3: only the epoch-2 checkpoint survives; dropout, crops and order resume too
    killed = tmp_path / "killed"
    (killed / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "full" / "checkpoints" / steps[0], killed / "checkpoints" / steps[0])
    (killed / "checkpoints" / "latest").write_text(steps[0] + "\n")
    shutil.copy(tmp_path / "full" / "metrics.jsonl", killed)  # it had logged past its checkpoint
    again = train_nlq(
        w["ann"], w["features"], w["text"], killed, overrides=opts, show_progress=False, resume="latest"
    )
    assert again["losses"] == pytest.approx(full["losses"], rel=1e-6)
    a, b = _weights(tmp_path / "full" / "final"), _weights(killed / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and {r["precision"] for r in rows} == {"fp32"}


def test_head_precision_and_config_file_are_recorded(tmp_path, one_thread):
    import json

    from test_head_data import make_nlq_world

    from egovlp.errors import InputError
    from heads.nlq.predict import predict_nlq
    from heads.nlq.train import train_nlq

    w = make_nlq_world(tmp_path / "w", clips=2, rows=24)
    yaml = tmp_path / "mine.yaml"
    yaml.write_text("hidden: 16\nnum_heads: 2\nepochs: 2\n")
    over = {"precision": "bf16", "conv_layers": 1}
    summary = train_nlq(
        w["ann"], w["features"], w["text"], tmp_path / "r", config=yaml, overrides=over, show_progress=False
    )
    assert summary["precision"] == "bf16" and summary["config_file"] == str(yaml)
    assert all(np.isfinite(summary["losses"]))
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["config_file"] == str(yaml) and saved["config"]["hidden"] == 16
    assert _weights(tmp_path / "r" / "final")["video_norm.mean"].dtype == torch.float32  # fp32 masters
    pred = predict_nlq(
        tmp_path / "r", w["ann"], w["features"], w["text"], show_progress=False, precision="bf16"
    )
    assert pred["results"] and all(r["predicted_times"] for r in pred["results"])
    with pytest.raises(InputError, match="fp16"):
        train_nlq(
            w["ann"],
            w["features"],
            w["text"],
            tmp_path / "x",
            overrides={"precision": "fp16"},
            show_progress=False,
        )


def test_missing_packaged_head_config_is_an_error(tmp_path, monkeypatch):
    import egovlp.config
    from egovlp.errors import InputError
    from heads.common import head_config_file

    assert head_config_file("mq", None).name == "mq.yaml"
    monkeypatch.setattr(egovlp.config, "config_dirs", lambda: [tmp_path])
    with pytest.raises(InputError, match="mq: no such heads config"):
        head_config_file("mq", None)

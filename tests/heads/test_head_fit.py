"""The shared head training loop stops on a non-finite loss, like the pretraining and fine-tuning loops."""

from __future__ import annotations

import pytest
import torch

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

"""The one training skeleton (egovlp.training): parameter groups, the schedule, the checkpoint format
and an exact resume, on a toy model in one plain process (no accelerate)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from egovlp.errors import InputError
from egovlp.training import (
    CHECKPOINT_FORMAT,
    TRAINER_STATE,
    TRAINING_STATE,
    cosine_with_warmup,
    create_optimizer,
    latest_checkpoint,
    load_checkpoint,
    parameter_groups,
    resume_checkpoint,
    save_checkpoint,
    warmup_cosine_factor,
)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
        self.patch_embed = nn.Sequential(nn.Conv1d(4, 4, 1))  # a projection under an *_embed module
        self.words = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 1)
        self.drop = nn.Dropout(0.5)  # draws from the global RNG: resume must restore it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x.transpose(1, 2)).transpose(1, 2) + self.pos_embed + self.words.weight[:3]
        return self.fc(self.drop(self.norm(x))).mean()


def test_no_decay_on_norms_biases_and_embeddings():
    model = Toy()
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {"patch_embed.0.weight", "fc.weight"}
    assert {names[id(p)] for p in no_decay["params"]} == {
        "pos_embed",
        "patch_embed.0.bias",
        "words.weight",
        "norm.weight",
        "norm.bias",
        "fc.bias",
    }
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)


def test_warmup_then_cosine_to_zero():
    assert [warmup_cosine_factor(s, 4, 12) for s in (0, 2, 4)] == [0.0, 0.5, 1.0]
    assert warmup_cosine_factor(8, 4, 12) == pytest.approx(0.5)
    assert warmup_cosine_factor(12, 4, 12) == pytest.approx(0.0) and warmup_cosine_factor(20, 4, 12) == 0.0
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = cosine_with_warmup(opt, 4, 12)
    for _ in range(2):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(1.0)


def _train(
    model, opt, sched, out, start: int, stop: int, gen: torch.Generator, every: int = 0
) -> list[float]:
    losses = []
    for step in range(start + 1, stop + 1):
        x = torch.randn(2, 3, 4, generator=gen) + np.random.rand() + random.random()
        loss = model(x)
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        losses.append(loss.item())
        if every and step % every == 0:
            save_checkpoint(
                out,
                step,
                model,
                opt,
                sched,
                {"loss": losses[-1]},
                keep=2,
                save_model=lambda f: f.mkdir(),
                generators={"data": gen},
            )
    return losses


def _fresh(seed: int = 0):
    torch.manual_seed(seed)
    model = Toy()
    opt = create_optimizer(model, 1e-2, 0.01)
    return model, opt, cosine_with_warmup(opt, 2, 8), torch.Generator().manual_seed(5)


def test_checkpoint_format_and_exact_resume(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    model, opt, sched, gen = _fresh()
    reference = _train(model, opt, sched, tmp_path / "a", 0, 8, gen, every=4)

    # the folder: trainer state (format, step, the app's fields), training state, RNG, the app's model
    ckpt = latest_checkpoint(tmp_path / "a")
    assert ckpt.name == "step_00000008" and sorted(p.name for p in ckpt.iterdir()) == [
        "model",
        "rng_state_0.pt",
        TRAINER_STATE,
        TRAINING_STATE,
    ]
    state = json.loads((ckpt / TRAINER_STATE).read_text())
    assert state["format"] == CHECKPOINT_FORMAT and state["step"] == 8 and "loss" in state
    blob = torch.load(ckpt / TRAINING_STATE, weights_only=True)  # tensors and plain values only
    assert set(blob) == {"model", "optimizer", "scheduler"} and blob["scheduler"]["last_epoch"] == 8

    # another process: other seeds and weights, then resume from step 4 (every RNG comes back)
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    model2, opt2, sched2, gen2 = _fresh(seed=7)
    _, got = resume_checkpoint(
        tmp_path / "a",
        str(tmp_path / "a" / "checkpoints" / "step_00000004"),
        model2,
        opt2,
        sched2,
        generators={"data": gen2},
    )
    assert got["step"] == 4
    again = _train(model2, opt2, sched2, tmp_path / "b", 4, 8, gen2)
    assert again == pytest.approx(reference[4:], rel=1e-6, abs=1e-7)
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_foreign_or_missing_checkpoints_are_one_line(tmp_path):
    model, opt, sched, _ = _fresh()
    with pytest.raises(InputError, match="no checkpoint found"):
        resume_checkpoint(tmp_path, "latest", model, opt, sched)
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / TRAINER_STATE).write_text('{"step": 3}')  # accelerate-era checkpoint: no format
    with pytest.raises(InputError, match="not an egovlp training checkpoint"):
        load_checkpoint(folder, model, opt, sched)

"""The skeleton every head shares: one training loop, one checkpoint format, one model loader, input
normalization, seeding and progress bars. What differs per head (data, model, loss, decoding) stays in
`heads/{nlq,mq,vq2d}`.

Cached features are read through `egovlp.features` (the feature store), configs through
`egovlp.config.load_config_file` (typed, limits on the fields), and every file is written atomically
through `egovlp.io`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypedDict, TypeVar

import numpy as np
import torch
from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
)
from pydantic.dataclasses import dataclass as config_dataclass
from tqdm import tqdm

from egovlp.config import STRICT_KEYS, config_from_dict, load_config_file
from egovlp.errors import InputError
from egovlp.io import remove_stale_temps, torch_save_atomic, write_json_atomic
from egovlp.training import check_finite
from egovlp.validate import output_dir, output_file, resolve_device, write_error

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "egovlp-head-v1"

M = TypeVar("M", bound=torch.nn.Module)
C = TypeVar("C", bound="HeadConfig")


# unknown keys refused; defaults validated too, so the consistency checks see every option
HEAD_CONFIG = ConfigDict(**STRICT_KEYS, validate_default=True)
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


@config_dataclass(config=HEAD_CONFIG)
class HeadConfig:
    """The options every head has: width, attention heads, dropout and training. Each head's config
    extends it (redeclaring a field only to change its default); limits are checked on load."""

    hidden: PositiveInt = 128
    num_heads: PositiveInt = 4
    dropout: Dropout = 0.1
    # training
    epochs: PositiveInt = 40
    batch_size: PositiveInt = 16
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.01
    seed: NonNegativeInt = 0

    @field_validator("*")
    @classmethod
    def _consistent(cls, value: Any, info: ValidationInfo) -> Any:
        problem = cls.consistency(info.field_name, value, info.data)
        if problem:
            raise ValueError(problem)
        return value

    @classmethod
    def consistency(cls, name: str, value: Any, earlier: dict[str, Any]) -> str | None:
        """What is wrong with option `name` given the options declared before it (None: nothing)."""
        if name == "num_heads" and earlier.get("hidden", 0) % value:
            return f"hidden {earlier['hidden']} is not a multiple of num_heads {value}"
        return None


# ---- runtime ----------------------------------------------------------------------------------------


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a torch generator for the data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def progress(iterable: Iterable, desc: str, total: int | None = None, enable: bool = True) -> Iterable:
    """A tqdm bar on stderr (stdout is kept for results)."""
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, disable=not enable, leave=False)


class InputNorm(torch.nn.Module):
    """Per-channel standardization with statistics of the training features, kept as buffers so the
    checkpoint carries them. Features of a weakly trained tower vary little around a large shared offset
    (an untrained text tower's CLS varies ~1% across queries); z-scoring exposes that variation."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, rows: torch.Tensor) -> None:
        """rows [N, dim] of training features."""
        rows = rows.float().reshape(-1, self.mean.shape[0])
        self.mean.copy_(rows.mean(0))
        self.std.copy_(rows.std(0, unbiased=False).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# ---- the training loop ------------------------------------------------------------------------------


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int, warmup_steps: int = 0
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on norms, biases and embeddings-like 1-d params) with linear warmup + cosine decay."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_ = (step - warmup_steps) / max(1, total - warmup_steps)
        return 0.5 * (1.0 + float(np.cos(np.pi * min(1.0, progress_))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[list[int]]:
    """Index batches of one epoch: shuffled with `generator`, in order without one."""
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def fit(
    model: torch.nn.Module,
    cfg: HeadConfig,
    n: int,
    loss_of: Callable[[list[int]], torch.Tensor],
    generator: torch.Generator,
    desc: str,
    show_progress: bool = True,
) -> list[float]:
    """Train `model` for cfg.epochs over `n` samples; `loss_of(indices)` returns a batch's scalar loss.

    AdamW with one epoch of linear warmup then cosine decay, gradients clipped to norm 1. Returns the
    sample-weighted mean loss of every epoch.
    """
    steps_per_epoch = -(-n // cfg.batch_size)
    opt, sched = make_optimizer(
        model, cfg.lr, cfg.weight_decay, cfg.epochs * steps_per_epoch, steps_per_epoch
    )
    losses: list[float] = []
    bar = progress(range(cfg.epochs), desc=desc, enable=show_progress)
    step = 0
    for _epoch in bar:
        model.train()
        total = 0.0
        for idx in batches(n, cfg.batch_size, generator):
            loss = loss_of(idx)
            step += 1
            check_finite(loss, step, None)  # stop before a NaN reaches the weights and the checkpoint
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


class TrainOptions(TypedDict, total=False):
    """The options of every `train_<head>` function besides its data and output folder."""

    config: str | os.PathLike | None  # YAML of the head's config (None: the defaults)
    overrides: Mapping[str, Any] | None  # typed values over the YAML (None values are skipped)
    device: str  # cpu, cuda, cuda:N or auto
    show_progress: bool


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What `train_head` gives a head's `prepare`: the seeded generator of the data order (and of
    random crops or windows) and the device."""

    generator: torch.Generator
    device: torch.device


@dataclasses.dataclass
class Training:
    """What a head hands the shared loop: the model (inputs normalized, on its device), the number of
    samples, the loss of a batch of sample indices, counts for the summary and the checkpoint fields
    that rebuild the model."""

    model: torch.nn.Module
    n: int
    loss_of: Callable[[list[int]], torch.Tensor]
    counts: dict[str, Any]
    meta: dict[str, Any]


def train_head(
    task: str,
    config_cls: type[C],
    prepare: Callable[[C, RunContext], Training],
    out_dir: str | os.PathLike,
    config: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str = "cpu",
    show_progress: bool = True,
) -> dict[str, Any]:
    """The one `heads train` flow: config (YAML + overrides, checked), output folder (checked before any
    data is read), seed, device, `prepare` (the head's data and model), `fit`, then
    `{out_dir}/checkpoint.pt` and `config.json`. Returns {"task", **counts, "losses", "seconds"}."""
    cfg = load_config_file(config_cls, config, overrides or {})
    dev = resolve_device(device)
    out = output_dir(out_dir, "--out")
    remove_stale_temps(out)  # a killed run's half-written checkpoint
    generator = seed_everything(cfg.seed)
    job = prepare(cfg, RunContext(generator, dev))
    start = time.perf_counter()
    losses = fit(job.model, cfg, job.n, job.loss_of, generator, f"train {task}", show_progress)
    save_checkpoint(out / "checkpoint.pt", task, job.model, cfg, **job.meta, losses=losses)
    summary = {"task": task, **job.counts, "losses": losses, "seconds": time.perf_counter() - start}
    write_output({"config": dataclasses.asdict(cfg), **summary}, out / "config.json")
    logger.info("%s: %s, final loss %.4f, checkpoint in %s", task, job.counts, losses[-1], out)
    return summary


# ---- checkpoints and outputs ------------------------------------------------------------------------


def output_path(path: str | os.PathLike | None) -> Path | None:
    """A prediction file to write (checked writable before the work starts), or None."""
    return None if path is None else output_file(path, "--out")


def write_output(obj: Any, path: str | os.PathLike) -> None:
    """A JSON output written atomically; a full or read-only disk is an InputError naming the path."""
    try:
        write_json_atomic(obj, path)
    except OSError as err:
        raise write_error(path, err) from None


def save_checkpoint(path: Path, task: str, model: torch.nn.Module, config: Any, **extra: Any) -> None:
    """torch.save {format, task, config, state_dict, extra...} atomically; the config rebuilds the model."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "task": task,
        "config": dataclasses.asdict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    try:
        torch_save_atomic(payload, path)
    except OSError as err:
        raise write_error(path, err) from None


def load_checkpoint(path: str | os.PathLike, task: str) -> dict[str, Any]:
    """Read a head checkpoint (weights_only: plain tensors and python values) and check its task."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for a truncated or foreign file
        raise InputError(f"{path}: not a readable head checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not an egovlp head checkpoint (no format {CHECKPOINT_FORMAT!r})")
    if payload.get("task") != task:
        raise InputError(f"{path}: a {payload.get('task')!r} checkpoint, expected {task!r}")
    return payload


def load_head(
    path: str | os.PathLike,
    task: str,
    config_cls: type,
    build: Callable[[Any, dict[str, Any]], M],
    device: str = "cpu",
) -> tuple[M, dict[str, Any]]:
    """The one model loader: checkpoint -> config -> `build(cfg, payload)` -> weights -> eval mode on
    `device`. Returns the model and the checkpoint payload (for the head's extra fields)."""
    payload = load_checkpoint(path, task)
    cfg = config_from_dict(config_cls, payload["config"], source=str(path))
    model = build(cfg, payload)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise InputError(f"{path}: weights do not fit the {task} head ({str(err).splitlines()[0]})") from None
    return model.to(resolve_device(device)).eval(), payload

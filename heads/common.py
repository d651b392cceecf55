"""What every head shares: its config base, the training flow on `egovlp.training` (the one optimizer,
schedule, checkpoint format, metrics.jsonl and non-finite-loss stop of all trainers), the model folder
and its loader, input normalization, seeding and progress bars. What differs per head (data, model,
loss, decoding) stays in `heads/{nlq,mq,vq2d}`.

A run folder (`heads train ... --out RUN`):

    RUN/config.json      the resolved options, the config file they came from, the precision
    RUN/metrics.jsonl    one row per epoch: step, epoch, loss, lr, precision
    RUN/checkpoints/     egovlp.training checkpoints (resume with --resume); each has model/
    RUN/final/           the head model: model.safetensors + config.json (format, task, config, meta)
    RUN/summary.json     what `heads train` printed, with every epoch's loss

`heads predict --checkpoint` takes the run folder, its final/, or a checkpoint folder. Cached features
are read through `egovlp.features`, configs through `egovlp.config` (`find_config("heads", task)`
when none is given), and every file is written atomically through `egovlp.io`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import shutil
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

from egovlp.config import STRICT_KEYS, find_config, load_config_file
from egovlp.errors import InputError
from egovlp.io import remove_stale_temps, write_json_atomic
from egovlp.precision import Precision, resolve_precision
from egovlp.training import (
    CHECKPOINTS,
    MetricsLog,
    PrecisionName,
    check_finite,
    cosine_with_warmup,
    create_optimizer,
    resume_checkpoint,
    save_checkpoint,
)
from egovlp.validate import output_dir, output_file, resolve_device, write_error
from heads.model_folder import (  # noqa: F401 - re-exported: the loader's old home
    CONFIG_NAME,
    FINAL,
    HEAD_FORMAT,
    WEIGHTS_NAME,
    head_model_folder,
    load_checkpoint,
    load_head,
    precision_for_device,
    predict_precision,
    run_model,
    save_head,
)

logger = logging.getLogger(__name__)


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
    precision: PrecisionName = "auto"  # egovlp.precision's vocabulary; CPU bf16 = autocast, fp32 weights
    checkpoint_every: NonNegativeInt = 0  # epochs between checkpoints; 0: only after the last epoch
    keep_checkpoints: PositiveInt = 1

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


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[list[int]]:
    """Index batches of one epoch: shuffled with `generator`, in order without one."""
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


@dataclasses.dataclass
class RunFolder:
    """Where `fit` keeps its state: metrics.jsonl and checkpoints (each with the head's model written
    by `save_model(folder)`), and the checkpoint to resume from ("latest" or a folder; None: fresh)."""

    path: Path
    save_model: Callable[[Path], None] | None = None
    resume: str | None = None


def fit(
    model: torch.nn.Module,
    cfg: HeadConfig,
    n: int,
    loss_of: Callable[[list[int]], torch.Tensor],
    generator: torch.Generator,
    desc: str,
    show_progress: bool = True,
    precision: Precision | None = None,
    run: RunFolder | None = None,
) -> list[float]:
    """Train `model` for cfg.epochs over `n` samples; `loss_of(indices)` returns a batch's scalar loss.

    egovlp.training's AdamW groups and schedule (one epoch of linear warmup, then cosine decay),
    gradients clipped to norm 1, in `precision` (None: fp32; fp16 with a loss scaler). With a `run`
    folder: one metrics row per epoch, a checkpoint every cfg.checkpoint_every epochs and after the
    last, and an exact resume from an epoch's checkpoint (the data-order generator is part of it).
    Returns the sample-weighted mean loss of every epoch (the resumed ones included).
    """
    device_type = next(model.parameters()).device.type
    precision = precision or Precision("fp32", device_type)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = create_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = cosine_with_warmup(optimizer, steps_per_epoch, total_steps)
    scaler = torch.amp.GradScaler(device_type, enabled=precision.name == "fp16")
    fp16_scaler = scaler if scaler.is_enabled() else None
    generators = {"data": generator}
    step, losses, last_good = 0, [], None
    if run is not None and run.resume:
        last_good, state = resume_checkpoint(
            run.path, run.resume, model, optimizer, scheduler, generators=generators, scaler=fp16_scaler
        )
        step, losses = state["step"], list(state.get("losses", []))
        if step != len(losses) * steps_per_epoch:
            raise InputError(f"--resume {last_good}: step {step} is not the end of epoch {len(losses)} here")
    metrics = MetricsLog(run.path, start_step=step, tensorboard=False) if run is not None else None
    bar = progress(range(len(losses), cfg.epochs), desc=desc, enable=show_progress)
    try:
        for epoch in bar:
            model.train()
            total = 0.0
            for idx in batches(n, cfg.batch_size, generator):
                with precision.autocast():
                    loss = loss_of(idx).float()
                step += 1
                check_finite(
                    loss, step, last_good
                )  # stop before a NaN reaches the weights and the checkpoint
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / n)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if run is None:
                continue
            metrics.write(
                {
                    "step": step,
                    "epoch": epoch + 1,
                    "loss": losses[-1],
                    "lr": scheduler.get_last_lr()[0],
                    "precision": precision.name,
                }
            )
            every = cfg.checkpoint_every
            if epoch + 1 == cfg.epochs or (every and (epoch + 1) % every == 0):
                state = {"epoch": epoch + 1, "losses": losses, "precision": precision.name}
                last_good = save_checkpoint(
                    run.path,
                    step,
                    model,
                    optimizer,
                    scheduler,
                    state,
                    cfg.keep_checkpoints,
                    run.save_model,
                    generators=generators,
                    scaler=fp16_scaler,
                )
    finally:
        if metrics is not None:
            metrics.close()
    return losses


class TrainOptions(TypedDict, total=False):
    """The options of every `train_<head>` function besides its data and output folder."""

    config: str | os.PathLike | None  # a packaged name or a YAML (None: the packaged heads/<task>.yaml)
    overrides: Mapping[str, Any] | None  # typed values over the YAML (None values are skipped)
    device: str  # cpu, cuda, cuda:N or auto
    show_progress: bool
    resume: str | None  # "latest" or a checkpoint folder of this run


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What `train_head` gives a head's `prepare`: the seeded generator of the data order (and of
    random crops or windows) and the device."""

    generator: torch.Generator
    device: torch.device


@dataclasses.dataclass
class Training:
    """What a head hands the shared loop: the model (inputs normalized, on its device), the number of
    samples, the loss of a batch of sample indices, counts for the summary and the model-folder
    fields that rebuild the model."""

    model: torch.nn.Module
    n: int
    loss_of: Callable[[list[int]], torch.Tensor]
    counts: dict[str, Any]
    meta: dict[str, Any]


def head_config_file(task: str, config: str | os.PathLike | None) -> Path:
    """The YAML a head trains with: `config` (a packaged name or a path), or the packaged
    `heads/<task>.yaml`; never a silent built-in default (a missing packaged file is an InputError)."""
    return find_config("heads", task if config is None else config)


def train_head(
    task: str,
    config_cls: type[C],
    prepare: Callable[[C, RunContext], Training],
    out_dir: str | os.PathLike,
    config: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str = "cpu",
    show_progress: bool = True,
    resume: str | None = None,
) -> dict[str, Any]:
    """The one `heads train` flow: config (YAML + overrides, checked), output folder (checked before any
    data is read), precision, seed, device, `prepare` (the head's data and model), `fit` with its
    checkpoints, then `final/` and `summary.json` (module docstring). Returns {"task", **counts,
    "losses", "seconds", "precision", "config_file"}."""
    config_file = head_config_file(task, config)
    cfg = load_config_file(config_cls, config_file, overrides or {})
    dev = resolve_device(device)
    precision = resolve_precision(cfg.precision, dev, "--precision")
    out = output_dir(out_dir, "--out")
    remove_stale_temps(out)  # a killed run's half-written files
    remove_stale_temps(out / CHECKPOINTS)
    if resume is None:  # a fresh run replaces an earlier run's checkpoints in the same folder
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    options = {
        "config": dataclasses.asdict(cfg),
        "config_file": str(config_file),
        "precision": precision.name,
    }
    write_output(options, out / CONFIG_NAME)
    generator = seed_everything(cfg.seed)
    job = prepare(cfg, RunContext(generator, dev))

    def save_model(folder: Path) -> None:
        save_head(folder, task, job.model, cfg, job.meta)

    start = time.perf_counter()
    run = RunFolder(out, save_model, resume)
    losses = fit(
        job.model, cfg, job.n, job.loss_of, generator, f"train {task}", show_progress, precision, run
    )
    save_model(out / FINAL)
    summary = {
        "task": task,
        **job.counts,
        "losses": losses,
        "seconds": time.perf_counter() - start,
        "precision": precision.name,
        "config_file": str(config_file),
    }
    write_output(summary, out / "summary.json")
    logger.info("%s: %s, final loss %.4f, model in %s", task, job.counts, losses[-1], out / FINAL)
    return summary


# ---- outputs ----------------------------------------------------------------------------------------


def output_path(path: str | os.PathLike | None) -> Path | None:
    """A prediction file to write (checked writable before the work starts), or None."""
    return None if path is None else output_file(path, "--out")


def write_output(obj: Any, path: str | os.PathLike) -> None:
    """A JSON output written atomically; a full or read-only disk is an InputError naming the path."""
    try:
        write_json_atomic(obj, path)
    except OSError as err:
        raise write_error(path, err) from None

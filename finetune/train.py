"""OSCC / PNR fine-tuning of the video tower through accelerate (docs/design.md B.7).

One process runs directly; `--num-processes N` relaunches under torchrun (gloo on the CPU, NCCL on
GPUs), and `accelerate launch -m finetune.cli oscc|pnr ...` works the same way. Each process takes its own
share of every epoch with the same batch size, and DDP averages the gradients, so N processes take
the steps one process would take with an N times larger batch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from egovlp import training
from egovlp.errors import InputError
from egovlp.formats.fho import read_fho
from egovlp.training import TrainingDiverged, check_finite, latest_checkpoint
from finetune.config import FinetuneConfig
from finetune.data import FHOClips, epoch_loader, steps_per_epoch, training_clips
from finetune.model import create_classifier, save_classifier

log = logging.getLogger("finetune")

__all__ = ["TrainingDiverged", "classification_loss", "train"]


def classification_loss(
    model, frames: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy over this process's batch, logits [B, C]); DDP averages the gradients."""
    logits = model(frames)  # (B, C)
    return F.cross_entropy(logits.float(), labels), logits


def train(cfg: FinetuneConfig, resume: str | None = None, progress: bool = True) -> dict:
    from accelerate.utils import set_seed

    precision = training.training_precision(cfg.precision)
    accelerator = training.create_accelerator(precision, 1, cfg.num_workers)
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    set_seed(cfg.seed)
    clips = training_clips(read_fho(cfg.ann), cfg.task, cfg.ann)
    if len(clips) < world:
        raise InputError(f"{cfg.ann}: {len(clips)} clips cannot be shared by {world} processes")
    output_dir = training.prepare_output_dir(cfg.output_dir, accelerator, cfg.to_dict())

    model = create_classifier(cfg.task, cfg.init, cfg.model, cfg.num_frames, cfg.img_size)
    img_size = model.video_cfg.img_size
    dataset = FHOClips(clips, cfg.videos, cfg.task, cfg.num_frames, img_size, train=True, seed=cfg.seed)
    if cfg.cache:
        dataset.preload(progress=progress and main)
    per_epoch = steps_per_epoch(len(clips), cfg.batch_size, world)
    total = per_epoch * cfg.epochs
    model, optimizer, scheduler, step = training.prepare_optimization(
        accelerator, model, cfg.lr, cfg.weight_decay, cfg.warmup_steps, total, output_dir, resume
    )
    metrics = training.MetricsLog(output_dir, start_step=step, enabled=main)
    bar = training.progress_bar(total, step, f"finetune {cfg.task}", main and progress)
    last_good = latest_checkpoint(output_dir)
    every = cfg.checkpoint_every or per_epoch

    def save_model(folder: Path) -> None:
        save_classifier(accelerator.unwrap_model(model), folder, cfg.task, {"init": cfg.init})

    summary: dict = {
        "start_step": step,
        "steps": total,
        "clips": len(clips),
        "steps_per_epoch": per_epoch,
        "precision": precision.name,
    }
    model.train()
    t_last = time.perf_counter()
    for epoch in range(step // per_epoch, cfg.epochs):
        loader = epoch_loader(
            dataset, epoch, cfg.batch_size, cfg.seed, rank, world, step - epoch * per_epoch, cfg.num_workers
        )
        for frames, labels, _ in loader:
            frames, labels = frames.to(accelerator.device), labels.to(accelerator.device)
            with precision.autocast():  # the tower; the cross-entropy runs on fp32 logits
                loss, logits = classification_loss(model, frames, labels)
            # the global batch's loss and accuracy (every process's share); every rank checks the same
            # reduced loss, so all stop together on a divergence instead of one waiting in all-reduce
            stats = torch.stack([loss.detach().float(), (logits.argmax(-1) == labels).float().mean()])
            stats = accelerator.reduce(stats, reduction="mean")
            check_finite(stats[0], step + 1, last_good)
            accelerator.backward(loss)
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            stats = stats.tolist()
            now = time.perf_counter()
            record = {
                "step": step,
                "epoch": epoch + 1,
                "loss": stats[0],
                "accuracy": stats[1],
                "lr": scheduler.get_last_lr()[0],
                "clips_per_s": len(labels) * world / max(now - t_last, 1e-9),
                "precision": precision.name,
            }
            t_last = now
            metrics.write(record)
            bar.set_postfix(epoch=epoch + 1, loss=f"{stats[0]:.3f}")
            bar.update(1)
            summary["loss"] = stats[0]
            if step % every == 0 or step == total:
                last_good = training.save_checkpoint(
                    output_dir,
                    step,
                    model,
                    optimizer,
                    scheduler,
                    {"epoch": epoch + 1, "loss": stats[0], "precision": precision.name},
                    cfg.keep_checkpoints,
                    save_model,
                    accelerator,
                )
    bar.close()
    metrics.close()
    if main:
        save_model(output_dir / "final")
    summary["step"] = step
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary

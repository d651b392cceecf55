"""EgoNCE pretraining on EgoClip shards through accelerate.

    egovlp pretrain --config configs/pretrain/demo.yaml [train.lr=1e-4 ...] [--resume] [--num-processes N]

One process runs directly; `--num-processes N` re-launches itself under torchrun (gloo on CPU,
NCCL on GPU), and `accelerate launch -m pretrain.train ...` works the same way for clusters.
Embeddings and tags are all-gathered (gradient to the local slice) so the loss sees the global
batch; the backward is scaled by the world size so averaged gradients equal one process's.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from egovlp import training
from egovlp.cli_args import OneLineParser
from egovlp.config import find_config
from egovlp.distributed import gather_no_grad, gather_with_grad
from egovlp.errors import InputError
from egovlp.losses import egonce
from egovlp.precision import PRECISIONS, Precision
from egovlp.training import TrainingDiverged, check_finite, latest_checkpoint
from pretrain.config import PretrainConfig, load_pretrain_config

log = logging.getLogger("pretrain")

__all__ = ["TrainingDiverged", "create_pretrain_model", "global_egonce", "latest_checkpoint", "main", "train"]


# --- the model and the loss --------------------------------------------------------------------


def create_pretrain_model(cfg: PretrainConfig):
    model = training.create_model_from_init(cfg.init, cfg.model)
    model.video_model.grad_checkpointing = cfg.train.grad_checkpointing
    if cfg.train.freeze_text:
        model.text_model.requires_grad_(False)
    return model.train()


def global_egonce(
    model, batch: dict, tokens: dict, rank: int, world_size: int, opts, precision: Precision | None = None
) -> torch.Tensor:
    """Loss over the batch of every process; gradients reach this process's own embeddings.

    The towers run in `precision` (autocast); the similarities and the loss in fp32, where a
    temperature of 0.05 would magnify bf16's rounding of the cosines twentyfold.
    """
    with precision.autocast() if precision is not None else nullcontext():
        text_emb, video_emb = model(batch["video"], tokens["input_ids"], tokens["attention_mask"])
    text_all = gather_with_grad(text_emb.float(), rank, world_size)
    video_all = gather_with_grad(video_emb.float(), rank, world_size)
    verb = gather_no_grad(batch["verb"], world_size)
    noun = gather_no_grad(batch["noun"], world_size)
    return egonce(text_all, video_all, verb, noun, opts.temperature, verb=opts.verb, noun=opts.noun)


# --- data --------------------------------------------------------------------------------------


def taxonomy_sizes(cfg: PretrainConfig) -> tuple[int, int]:
    from egovlp.formats.taxonomy import read_taxonomy

    root = Path(cfg.data.taxonomy)
    verbs, nouns = root / "verb_taxonomy.json", root / "noun_taxonomy.json"
    for p in (verbs, nouns):
        if not p.is_file():
            raise InputError(f"{p}: taxonomy file not found (data.taxonomy={cfg.data.taxonomy!r})")
    return len(read_taxonomy(verbs)), len(read_taxonomy(nouns))


def batch_stream(cfg: PretrainConfig, world_size: int, skip_batches: int, img_size: int):
    """Endless, deterministic batches for this process, positioned after `skip_batches`."""
    from pretrain.loader import make_train_loader

    num_verbs, num_nouns = taxonomy_sizes(cfg)
    loader = make_train_loader(
        cfg.data.shards,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        epoch_size=0,  # one endless, seeded stream: resuming skips into it exactly
        seed=cfg.train.seed,
        num_verbs=num_verbs,
        num_nouns=num_nouns,
        size=img_size,
        shuffle_buffer=cfg.data.shuffle_buffer,
        world_size=world_size,
        skip_batches=skip_batches,
    )
    yield from loader


# --- the loop ----------------------------------------------------------------------------------


def train(cfg: PretrainConfig, resume: str | None = None) -> dict:
    from accelerate.utils import set_seed

    opts = cfg.train
    precision = training.training_precision(opts.precision, "train.precision")
    accelerator = training.create_accelerator(precision, opts.grad_accum, cfg.data.num_workers)
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(opts.seed)
    output_dir = training.prepare_output_dir(cfg.output_dir, accelerator, cfg.to_dict())

    model = create_pretrain_model(cfg)
    tokenizer = model.tokenizer
    model, optimizer, scheduler, step = training.prepare_optimization(
        accelerator, model, opts.lr, opts.weight_decay, opts.warmup_steps, opts.steps, output_dir, resume
    )

    mcq = _egomcq_setup(cfg)
    metrics = training.MetricsLog(output_dir, start_step=step, enabled=accelerator.is_main_process)
    img_size = accelerator.unwrap_model(model).cfg.video.img_size
    stream = batch_stream(cfg, world, skip_batches=step * opts.grad_accum, img_size=img_size)
    bar = training.progress_bar(opts.steps, step, "pretrain", accelerator.is_main_process)
    summary: dict = {"start_step": step, "precision": precision.name}
    clips_per_step = cfg.data.batch_size * 2 * world * opts.grad_accum
    last_good = latest_checkpoint(output_dir)
    t_window, n_window = time.perf_counter(), 0
    while step < opts.steps:
        for _ in range(opts.grad_accum):
            batch = next(stream)
            tokens = tokenizer(batch["text"])
            batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            tokens = {k: v.to(accelerator.device) for k, v in tokens.items()}
            with accelerator.accumulate(model):
                loss = global_egonce(model, batch, tokens, rank, world, opts, precision)
                check_finite(loss, step + 1, last_good)
                accelerator.backward(loss * world)
                if accelerator.sync_gradients and opts.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), opts.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        n_window += clips_per_step
        loss_value = loss.item()
        summary["loss"] = loss_value
        # one metrics row per step: the training numbers and, when it runs, EgoMCQ
        record: dict = {}
        if step % opts.log_every == 0 or step == opts.steps:
            rate = n_window / (time.perf_counter() - t_window)
            t_window, n_window = time.perf_counter(), 0
            record = {
                "step": step,
                "loss": loss_value,
                "lr": scheduler.get_last_lr()[0],
                "clips_per_s": rate,
                "precision": precision.name,
            }
            bar.set_postfix(loss=f"{loss_value:.3f}", clips_s=f"{rate:.1f}")
        if mcq and (step == opts.steps or (mcq["every"] and step % mcq["every"] == 0)):
            record = {"step": step, **record, **_validate(accelerator, model, mcq, step, summary)}
        if record:
            metrics.write(record)
        bar.update(1)
        if opts.checkpoint_every and (step % opts.checkpoint_every == 0 or step == opts.steps):
            last_good = training.save_checkpoint(
                output_dir,
                step,
                model,
                optimizer,
                scheduler,
                {"loss": loss_value, "precision": precision.name},
                opts.keep_checkpoints,
                _model_saver(accelerator, model),
                accelerator,
            )
    bar.close()
    if mcq and "egomcq" not in summary:  # resumed at the last step: the scores are not in the log twice
        _validate(accelerator, model, mcq, step, summary)
    metrics.close()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(str(output_dir / "final"))
    summary["step"] = step
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _model_saver(accelerator, model):
    def save(folder: Path) -> None:
        accelerator.unwrap_model(model).save_pretrained(str(folder))  # loadable by egovlp.load_model

    return save


def _egomcq_setup(cfg: PretrainConfig) -> dict | None:
    if not cfg.egomcq.data:
        return None
    from egovlp.formats.egomcq import read_egomcq

    return {"items": read_egomcq(cfg.egomcq.data), "every": cfg.egomcq.every, "opts": cfg.egomcq}


def _validate(accelerator, model, mcq: dict, step: int, summary: dict) -> dict:
    """EgoMCQ on every process's share; the scores as metrics-row fields."""
    from accelerate.utils import gather_object

    from pretrain.egomcq import evaluate_egomcq

    o = mcq["opts"]
    scores = evaluate_egomcq(
        accelerator.unwrap_model(model),
        mcq["items"],
        o.videos,
        o.num_frames,
        o.batch_size,
        o.num_workers,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        gather=gather_object,
    )
    summary["egomcq"] = scores
    if accelerator.is_main_process:
        log.info("step %d EgoMCQ inter %.1f%% intra %.1f%%", step, scores["inter"], scores["intra"])
    return {f"egomcq/{k}": v for k, v in scores.items()}


# --- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="egovlp pretrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", required=True, help="a packaged pretrain config (demo, egovlp-base) or a YAML path"
    )
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. train.lr=1e-4 data.batch_size=8")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        help="continue from the latest checkpoint in output_dir, or from the one given",
    )
    parser.add_argument(
        "--num-processes", type=int, default=1, help="processes on this machine (torchrun; default 1)"
    )
    parser.add_argument("--summary", default=None, help="write the run summary JSON here")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None, help="overrides the config's train.precision"
    )
    args = parser.parse_args(argv)
    training.check_num_processes(args.num_processes)
    config_file = find_config("pretrain", args.config)
    overrides = [*args.overrides, *([f"train.precision={args.precision}"] if args.precision else [])]
    cfg = load_pretrain_config(str(config_file), overrides)  # validate before launching anything
    training.training_precision(cfg.train.precision, "train.precision")  # fp16 on a CPU: refused here

    if args.num_processes > 1 and not training.launched():
        rest = ["--config", str(config_file), *overrides]
        rest += ["--resume", args.resume] if args.resume else []
        rest += ["--summary", args.summary] if args.summary else []
        return training.relaunch("pretrain.train", rest, args.num_processes)

    def run() -> dict:
        return {**train(cfg, resume=args.resume), "config_file": str(config_file)}

    return training.run_and_report("egovlp pretrain", run, args.summary)


if __name__ == "__main__":
    from egovlp.cli import run

    sys.exit(run(["pretrain", *sys.argv[1:]]))

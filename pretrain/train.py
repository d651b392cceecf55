"""EgoNCE pretraining on EgoClip shards through accelerate.

    egovlp pretrain --config configs/pretrain/demo.yaml [train.lr=1e-4 ...] [--resume] [--num-processes N]

One process runs directly; `--num-processes N` re-launches itself under torchrun (gloo on CPU,
NCCL on GPU), and `accelerate launch -m pretrain.train ...` works the same way for clusters.
Embeddings and tags are all-gathered (gradient to the local slice) so the loss sees the global
batch; the backward is scaled by the world size so averaged gradients equal one process's.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from egovlp.distributed import gather_no_grad, gather_with_grad
from egovlp.errors import InputError
from egovlp.losses import egonce
from pretrain.config import PretrainConfig, load_pretrain_config

log = logging.getLogger("pretrain")


class TrainingDiverged(RuntimeError):
    pass


# --- the model and the loss --------------------------------------------------------------------


def create_pretrain_model(cfg: PretrainConfig):
    import egovlp
    from egovlp.config import load_config
    from egovlp.model import EgoVLP
    from egovlp.video_tower import video_tower_state_from_vit

    model_cfg = load_config(cfg.model)
    if cfg.init.startswith("vit:"):
        path = cfg.init[4:]
        if not Path(path).is_file():
            raise InputError(f"{path}: ViT state dict not found")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            vit = load_file(path)
        else:
            vit = torch.load(path, map_location="cpu", weights_only=True)
            vit = vit.get("state_dict", vit.get("model", vit))
        model = EgoVLP(model_cfg)
        model.video_model.load_state_dict(video_tower_state_from_vit(vit, model.video_model))
    elif cfg.init:
        model = egovlp.load_model(cfg.init, config=cfg.model)
    else:
        model = EgoVLP(model_cfg)
    model.video_model.grad_checkpointing = cfg.train.grad_checkpointing
    if cfg.train.freeze_text:
        model.text_model.requires_grad_(False)
    return model.train()


def global_egonce(model, batch: dict, tokens: dict, rank: int, world_size: int, opts) -> torch.Tensor:
    """Loss over the batch of every process; gradients reach this process's own embeddings."""
    text_emb, video_emb = model(batch["video"], tokens["input_ids"], tokens["attention_mask"])
    text_all = gather_with_grad(text_emb.float(), rank, world_size)
    video_all = gather_with_grad(video_emb.float(), rank, world_size)
    verb = gather_no_grad(batch["verb"], world_size)
    noun = gather_no_grad(batch["noun"], world_size)
    return egonce(text_all, video_all, verb, noun, opts.temperature, verb=opts.verb, noun=opts.noun)


def cosine_with_warmup(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)


def create_optimizer(model, opts) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # biases, norms and embeddings are not decayed
        (no_decay if p.ndim < 2 or "embed" in name or "token" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": opts.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=opts.lr)


# --- checkpoints -------------------------------------------------------------------------------


def latest_checkpoint(output_dir: Path) -> Path | None:
    pointer = output_dir / "checkpoints" / "latest"
    if pointer.is_file():
        path = output_dir / "checkpoints" / pointer.read_text().strip()
        if (path / "trainer_state.json").is_file():
            return path
    return None


def save_checkpoint(accelerator, model, output_dir: Path, step: int, extra: dict, keep: int) -> Path:
    """Directory written under a temporary name and renamed when complete; `latest` updated last."""
    ckpt_root = output_dir / "checkpoints"
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f".tmp_step_{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # model, optimizer, registered scheduler, every process's RNG
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(str(tmp / "model"))  # loadable by egovlp.load_model
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **extra}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer_tmp = ckpt_root / ".latest.tmp"
        pointer_tmp.write_text(final.name + "\n")
        os.replace(pointer_tmp, ckpt_root / "latest")
        for old in sorted(ckpt_root.glob("step_*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


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
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    opts = cfg.train
    cuda = torch.cuda.is_available()
    precision = opts.mixed_precision if opts.mixed_precision != "auto" else ("bf16" if cuda else "no")
    if not cuda and precision != "no":
        raise InputError(
            f"train.mixed_precision={precision}: use 'no' on the CPU (bf16 matmul is far slower there)"
        )
    accelerator = Accelerator(
        mixed_precision=precision, gradient_accumulation_steps=opts.grad_accum, cpu=not cuda
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    if not cuda:
        # decoding workers and the model share the cores: oversubscribed OpenMP threads stall
        cores = max(1, (os.cpu_count() or 1) // world)
        torch.set_num_threads(max(1, cores - cfg.data.num_workers))
    set_seed(opts.seed)
    output_dir = Path(cfg.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    model = create_pretrain_model(cfg)
    tokenizer = model.tokenizer
    optimizer = create_optimizer(model, opts)
    scheduler = cosine_with_warmup(optimizer, opts.warmup_steps, opts.steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    # stepped by us once per optimizer step, so the schedule does not depend on the process count
    accelerator.register_for_checkpointing(scheduler)

    step = 0
    if resume:
        path = latest_checkpoint(output_dir) if resume == "latest" else Path(resume)
        if path is None or not (path / "trainer_state.json").is_file():
            raise InputError(
                f"--resume: no checkpoint found ({resume if resume != 'latest' else output_dir})"
            )
        accelerator.load_state(str(path))
        step = json.loads((path / "trainer_state.json").read_text())["step"]
        log.info("resumed from %s at step %d", path, step)

    mcq = _egomcq_setup(cfg)
    metrics_file = output_dir / "metrics.jsonl"
    writer = _tensorboard(output_dir) if accelerator.is_main_process else None
    img_size = accelerator.unwrap_model(model).cfg.video.img_size
    stream = batch_stream(cfg, world, skip_batches=step * opts.grad_accum, img_size=img_size)
    bar = tqdm(
        total=opts.steps,
        initial=step,
        disable=not accelerator.is_main_process,
        file=sys.stderr,
        desc="pretrain",
        dynamic_ncols=True,
    )
    summary: dict = {"start_step": step}
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
                with accelerator.autocast() if cuda else nullcontext():
                    loss = global_egonce(model, batch, tokens, rank, world, opts)
                if not torch.isfinite(loss):
                    where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint written yet"
                    raise TrainingDiverged(
                        f"non-finite loss ({loss.item()}) at step {step + 1}; stopping ({where})"
                    )
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
        if step % opts.log_every == 0 or step == opts.steps:
            rate = n_window / (time.perf_counter() - t_window)
            t_window, n_window = time.perf_counter(), 0
            record = {"step": step, "loss": loss_value, "lr": scheduler.get_last_lr()[0], "clips_per_s": rate}
            if accelerator.is_main_process:
                _log_metrics(metrics_file, writer, record)
                bar.set_postfix(loss=f"{loss_value:.3f}", clips_s=f"{rate:.1f}")
        bar.update(1)
        if mcq and mcq["every"] and step % mcq["every"] == 0 and step < opts.steps:
            _validate(accelerator, model, mcq, step, metrics_file, writer, summary)
        if opts.checkpoint_every and (step % opts.checkpoint_every == 0 or step == opts.steps):
            last_good = save_checkpoint(
                accelerator, model, output_dir, step, {"loss": loss_value}, opts.keep_checkpoints
            )
    bar.close()
    if mcq:
        _validate(accelerator, model, mcq, step, metrics_file, writer, summary)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(str(output_dir / "final"))
    summary["step"] = step
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _egomcq_setup(cfg: PretrainConfig) -> dict | None:
    if not cfg.egomcq.data:
        return None
    from egovlp.formats.egomcq import read_egomcq

    return {"items": read_egomcq(cfg.egomcq.data), "every": cfg.egomcq.every, "opts": cfg.egomcq}


def _validate(accelerator, model, mcq: dict, step: int, metrics_file: Path, writer, summary: dict) -> None:
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
        _log_metrics(metrics_file, writer, {"step": step, **{f"egomcq/{k}": v for k, v in scores.items()}})
        log.info("step %d EgoMCQ inter %.1f%% intra %.1f%%", step, scores["inter"], scores["intra"])


def _tensorboard(output_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(output_dir / "tensorboard"))


def _log_metrics(path: Path, writer, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                writer.add_scalar(key, value, record["step"])


# --- entry point -------------------------------------------------------------------------------


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="egovlp pretrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="configs/pretrain/*.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. train.lr=1e-4 data.batch_size=8")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        help="continue from the latest checkpoint in output_dir, or from the one given",
    )
    parser.add_argument("--num-processes", type=int, default=1, help="processes on this machine (torchrun)")
    parser.add_argument("--summary", default=None, help="write the run summary JSON here")
    args = parser.parse_args(argv)
    cfg = load_pretrain_config(args.config, args.overrides)  # validate before launching anything

    if args.num_processes > 1 and not _launched():
        import subprocess

        rest = ["--config", args.config, *args.overrides]
        rest += ["--resume", args.resume] if args.resume else []
        rest += ["--summary", args.summary] if args.summary else []
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={args.num_processes}",
            "-m",
            "pretrain.train",
            *rest,
        ]
        return subprocess.call(cmd)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        summary = train(cfg, resume=args.resume)
    except TrainingDiverged as err:
        print(f"egovlp pretrain: {err}", file=sys.stderr)
        return 1
    if args.summary and int(os.environ.get("RANK", "0")) == 0:
        Path(args.summary).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    from egovlp.cli import run

    sys.exit(run(["pretrain", *sys.argv[1:]]))

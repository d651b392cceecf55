"""`egovlp finetune oscc|pnr ...` and `egovlp finetune predict oscc|pnr ...`."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys

from egovlp import training
from egovlp.cli_args import OneLineParser
from egovlp.precision import PRECISIONS
from egovlp.validate import (
    input_dir,
    input_file,
    non_negative_float,
    non_negative_int,
    output_dir,
    output_file,
    positive_float,
    positive_int,
    resolve_device,
)

WORKFLOW = """\
Fine-tune EgoVLP's video tower end to end for Ego4D object state changes (docs/design.md B.7):
OSCC (did the object change state? 2 classes) and PNR (which of the 16 frames, 2 fps over the
8 s clip, is the point of no return? 16 classes). Cross-entropy, 10 epochs at the pretraining
learning rate by default; --precision auto is bf16 on CUDA, fp32 on the CPU.

workflow, from the released checkpoint and the FHO annotations to an eval table:

  egovlp finetune oscc --init egovlp.pth --ann fho_oscc-pnr_train.json --videos ego4d/full_scale \\
      --out runs/oscc
  egovlp finetune pnr  --init egovlp.pth --ann fho_oscc-pnr_train.json --videos ego4d/full_scale \\
      --out runs/pnr --num-processes 8              # one process per GPU (torchrun)
  egovlp finetune predict oscc --checkpoint runs/oscc --ann fho_oscc-pnr_val.json \\
      --videos ego4d/full_scale --out oscc_pred.json
  egovlp finetune predict pnr  --checkpoint runs/pnr  --ann fho_oscc-pnr_val.json \\
      --videos ego4d/full_scale --out pnr_pred.json
  egovlp eval oscc --gt fho_oscc-pnr_val.json --pred oscc_pred.json   # {"accuracy": .., "n": ..}
  egovlp eval pnr  --gt fho_oscc-pnr_val.json --pred pnr_pred.json    # {"error_sec": .., "n": ..}

--init also takes a converted folder (`egovlp convert`), `vit:PATH` (a timm image ViT) or
`random` (with --model configs/model/*.yaml). On the synthetic world: `egovlp synth data` writes
data/fho_oscc-pnr_{train,val}.json and their videos in data/videos/ (--videos data/videos).
A run folder holds config.json, metrics.jsonl (one row per step), checkpoints/ (--resume) and
final/ (the model predict reads).
"""


def _task_and_clips(p: argparse.ArgumentParser, ann: str) -> None:
    p.add_argument("task", choices=["oscc", "pnr"])
    p.add_argument("--ann", required=True, help=ann)
    p.add_argument("--videos", required=True, help="folder of {video_uid}.mp4 (or 600 s chunk folders)")


def _train_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="egovlp finetune",
        description=WORKFLOW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="egovlp finetune {oscc,pnr} --ann JSON --videos ROOT --out DIR [options]\n"
        "       egovlp finetune predict {oscc,pnr} --checkpoint DIR --ann JSON --videos ROOT --out PRED.json",
    )
    _task_and_clips(p, ann="fho_oscc-pnr_train.json")
    p.add_argument("--out", dest="output_dir", required=True, help="run folder")
    p.add_argument("--init", default="random", help="EgoVLP .pth, converted folder, vit:PATH, or random")
    p.add_argument("--model", default="", help="model YAML (random / vit init, or a .pth of another size)")
    p.add_argument("--epochs", type=positive_int, default=None, help="default 10")
    p.add_argument("--lr", type=positive_float, default=None, help="default 3e-5 (EgoVLP's pretraining lr)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="clips per process and step (8)")
    p.add_argument("--img-size", type=positive_int, default=None, help="input size (default: the model's)")
    p.add_argument("--weight-decay", type=non_negative_float, default=None)
    p.add_argument("--warmup-steps", type=non_negative_int, default=None)
    p.add_argument("--grad-clip", type=non_negative_float, default=None, help="0 disables (default 1.0)")
    p.add_argument("--workers", dest="num_workers", type=non_negative_int, default=None, help="decoders (2)")
    p.add_argument("--cache", action="store_true", help="decode each clip once, keep frames in memory")
    p.add_argument("--seed", type=non_negative_int, default=None)
    p.add_argument("--checkpoint-every", type=non_negative_int, default=None, help="steps (0: every epoch)")
    p.add_argument("--keep-checkpoints", type=positive_int, default=None)
    p.add_argument(
        "--precision", choices=PRECISIONS, default=None, help="auto (default: bf16 on CUDA), fp32, bf16, fp16"
    )
    p.add_argument("--resume", nargs="?", const="latest", default=None, help="continue from a checkpoint")
    p.add_argument("--num-processes", type=int, default=1, help="processes on this machine (torchrun)")
    p.add_argument("--summary", default=None, help="write the run summary JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def train_main(argv: list[str]) -> int:
    from egovlp.config import config_from_dict
    from finetune.config import FinetuneConfig

    args = _train_parser().parse_args(argv)
    training.check_num_processes(args.num_processes)
    input_file(args.ann, "--ann")
    input_dir(args.videos, "--videos")
    output_dir(args.output_dir, "--out")
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}  # the parser's names are the config's
    options = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    cfg = config_from_dict(FinetuneConfig, options, "options")
    training.training_precision(cfg.precision)  # fp16 on a CPU: refused before anything starts
    if args.num_processes > 1 and not training.launched():
        return training.relaunch("finetune.cli", argv, args.num_processes)

    from finetune.train import train

    run = functools.partial(train, cfg, resume=args.resume, progress=not args.quiet)
    return training.run_and_report("egovlp finetune", run, args.summary)


def predict_main(argv: list[str]) -> int:
    p = OneLineParser(
        prog="egovlp finetune predict",
        description="C.7 predictions of a fine-tuned model (OSCC: state_change per clip; PNR: pnr_frame, "
        "the predicted index mapped to a parent-video frame with the official mapping).",
    )
    _task_and_clips(p, ann="fho_oscc-pnr_val.json (or any C.7 file)")
    p.add_argument("--checkpoint", required=True, help="run folder (its final/), final/ or a checkpoint")
    p.add_argument("--out", required=True, help="predictions JSON")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--workers", dest="num_workers", type=non_negative_int, default=2)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)  # the names are predict()'s but for device and quiet
    input_file(args.ann, "--ann")
    input_dir(args.videos, "--videos")
    output_file(args.out, "--out")
    device = resolve_device(args.device)

    from finetune.predict import predict

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    options = dict(vars(args), device=device, progress=not args.quiet)
    del options["quiet"]
    preds = predict(**options)
    print(json.dumps({"task": args.task, "predictions": len(preds), "out": args.out}))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "predict":
        return predict_main(argv[1:])
    return train_main(argv)


if __name__ == "__main__":  # torchrun runs `python -m finetune.cli ...` in every process
    from egovlp.cli import run

    sys.exit(run(["finetune", *sys.argv[1:]]))

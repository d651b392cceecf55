"""`egovlp heads train|predict nlq|mq|vq2d ...`: train a head on cached features or write its predictions.

    egovlp heads train nlq --ann nlq_train.json \
        --features feats/nlq --text-features feats/text_train --out runs/nlq
    egovlp heads predict nlq --checkpoint runs/nlq --ann nlq_val.json \
        --features feats/nlq --text-features feats/text_val --out nlq_pred.json
    egovlp eval nlq --gt nlq_val.json --pred nlq_pred.json

A one-line JSON summary goes to stdout; progress bars and logs go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from egovlp.cli_args import OneLineParser
from egovlp.precision import PRECISIONS
from egovlp.validate import non_negative_int, positive_float, positive_int

TASKS = {
    "nlq": "NLQ span localization (VSLNet-style) on [T, 256] clip features + query text features",
    "mq": "Moment queries: ActionFormer-style multi-scale detector (focal + DIoU, Soft-NMS, optional ASL)",
    "vq2d": "VQ2D: query-to-frame attention + spatio-temporal transformer + anchor boxes on frame grids",
    "grounding": "EgoMask grounding: per-frame presence + patch masks from frame grids and text tokens",
}


def _module(task: str, action: str):
    return importlib.import_module(f"heads.{task}.{action}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="egovlp heads", description=__doc__.split("\n")[0])
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, summary in (
        ("train", "train a head"),
        ("predict", "write predictions in the challenge format"),
    ):
        sub = actions.add_parser(action, help=summary, description=summary)
        tasks = sub.add_subparsers(dest="task", required=True, metavar="TASK")
        for task, help_ in TASKS.items():
            p = tasks.add_parser(task, help=help_, description=f"{action} {task}: {help_}")
            p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto (default cpu)")
            p.add_argument("--quiet", action="store_true", help="no progress bars")
            p.add_argument(
                "--threads", type=positive_int, help="torch CPU threads (small heads often run fastest on 1)"
            )
            p.add_argument(
                "--precision",
                choices=PRECISIONS,
                default=None,
                help="auto (bf16 on CUDA, fp32 on the CPU), fp32, bf16, fp16 (train: overrides the config's)",
            )
            if action == "train":
                p.add_argument(
                    "--config", help=f"a packaged heads config name or a YAML (default: the packaged {task})"
                )
                p.add_argument(
                    "--out",
                    required=True,
                    type=Path,
                    help="run folder: config.json, metrics.jsonl, final/, ...",
                )
                p.add_argument(
                    "--resume",
                    nargs="?",
                    const="latest",
                    default=None,
                    help="continue from the run folder's latest checkpoint, or from the one given",
                )
                p.add_argument("--epochs", type=positive_int, help="override the config's epochs")
                p.add_argument("--seed", type=non_negative_int, help="override the config's seed")
                p.add_argument("--lr", type=positive_float, help="override the config's learning rate")
                p.add_argument("--batch-size", type=positive_int, help="override the config's batch size")
            else:
                p.add_argument(
                    "--checkpoint",
                    required=True,
                    type=Path,
                    help="the run folder of `heads train` (its final/), or a checkpoint folder",
                )
                p.add_argument("--out", required=True, type=Path, help="prediction JSON to write")
            _module(task, action).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.action == "train":  # config None: heads.common finds the packaged heads/<task>.yaml
        overrides = {
            "epochs": args.epochs,
            "seed": args.seed,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "precision": args.precision,
        }
        args.options = {
            "config": args.config,
            "overrides": overrides,
            "device": args.device,
            "show_progress": not args.quiet,
            "resume": args.resume,
        }
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
    summary = _module(args.task, args.action).run(args)
    print(json.dumps({k: v for k, v in summary.items() if k != "losses"} | _last_loss(summary)))
    return 0


def _last_loss(summary: dict) -> dict:
    losses = summary.get("losses")
    return {"first_loss": losses[0], "final_loss": losses[-1]} if losses else {}


if __name__ == "__main__":
    sys.exit(main())

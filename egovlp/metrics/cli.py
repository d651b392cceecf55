"""`egovlp eval nlq|mq|vq2d|oscc|pnr|grounding --gt GT.json --pred PRED.json`: print the metrics as JSON.

stdout carries exactly one JSON object (docs/design.md C.5 keys and units) so scripts can parse it; logs go
to stderr. A malformed file is an InputError naming the file and JSON path (exit code 2 through the
`egovlp` dispatcher, or through `python -m egovlp.metrics.cli`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from egovlp.cli_args import OneLineParser
from egovlp.errors import InputError
from egovlp.io import write_bytes_atomic
from egovlp.metrics.fho import oscc_metrics, pnr_metrics
from egovlp.metrics.grounding import egomask_metrics, grounding_file_metrics
from egovlp.metrics.io import load_json
from egovlp.metrics.mq import mq_metrics
from egovlp.metrics.nlq import nlq_metrics
from egovlp.metrics.vq2d import vq2d_metrics
from egovlp.validate import input_file, output_file, write_error

TASKS: dict[str, tuple[Callable[..., dict[str, Any]], str]] = {
    "nlq": (nlq_metrics, "Ego4D NLQ: R@{1,3,5} at tIoU {0.3,0.5} and mIoU (percent)"),
    "mq": (mq_metrics, "Ego4D Moment Queries: mAP at tIoU 0.1..0.5, their mean, Recall@1x at 0.5 (percent)"),
    "vq2d": (vq2d_metrics, "Ego4D VQ2D: tAP, tAP25, stAP, stAP25 (fractions), success, recovery (percent)"),
    "oscc": (oscc_metrics, "Ego4D FHO object state change classification: accuracy (percent) over all clips"),
    "pnr": (
        pnr_metrics,
        "Ego4D FHO PNR localization: mean absolute error in seconds over state-change clips",
    ),
    "grounding": (
        grounding_file_metrics,
        "EgoMask grounding: T_recall, IoU_all (J), IoU_gold, IoU_gold_pred, F, J&F and presence P/R/F1 "
        "(percent), overall and per subset; --gt/--pred are EgoMask folders (or JSON files of queries)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="egovlp eval", description="Score predictions with the official metrics.")
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for name, (_, summary) in TASKS.items():
        task = sub.add_parser(name, help=summary, description=summary)
        folder = " (or an EgoMask folder)" if name == "grounding" else ""
        task.add_argument("--gt", required=True, type=Path, help=f"ground-truth annotation JSON{folder}")
        task.add_argument(
            "--pred", required=True, type=Path, help=f"predictions JSON in the challenge format{folder}"
        )
        task.add_argument("--out", type=Path, help="also write the JSON object to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `TASK --gt GT --pred PRED [--out FILE]`, print the metrics JSON on stdout, return 0."""
    args = build_parser().parse_args(argv)
    metric, _ = TASKS[args.task]
    out = output_file(args.out, "--out") if args.out is not None else None
    if args.task == "grounding" and args.gt.is_dir():
        # EgoMask's own layout (docs/design.md D): folders on both sides
        if not args.pred.is_dir():
            raise InputError(
                f"--pred {args.pred}: the ground truth is an EgoMask folder, so give a prediction folder"
            )
        result = egomask_metrics(args.gt, args.pred)
    else:
        gt = load_json(input_file(args.gt, "--gt"))
        pred = load_json(input_file(args.pred, "--pred"))
        result = metric(gt, pred, gt_name=str(args.gt), pred_name=str(args.pred))
    text = json.dumps(result, allow_nan=False)
    if out is not None:
        try:
            write_bytes_atomic((text + "\n").encode(), out)
        except OSError as err:
            raise write_error(out, err) from None
    print(text)
    return 0


def _module_main() -> int:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return main()
    except InputError as err:
        print(f"egovlp eval: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_module_main())

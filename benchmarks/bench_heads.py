"""Downstream heads on the synthetic set: each head's official metric next to a trivial baseline.

    python benchmarks/bench_heads.py [--model demo-output/pretrain/final] [--videos 24] [--out bench-output/heads]

Steps (every one runs the real command, so this also checks that the heads read the extractor's output):
`egovlp synth` -> `egovlp extract` (presets nlq, text, vq2d) -> train NLQ / MQ / VQ2D heads on the train
split -> predict the val split -> score with the official metrics. Baselines: random windows (NLQ), the most
frequent training class on tiled windows (MQ), a centred box before the query frame (VQ2D).
Prints a table and writes `{out}/results.json`. Without `--model`, the demo-pretrained model is used when
`demo-output/pretrain/final` exists, else an untrained tiny model (say so when reporting numbers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import extraction_model, synth_and_extract  # noqa: E402

from egovlp.config import find_config  # noqa: E402
from egovlp.formats.ego4d import read_json, read_moments, read_nlq, read_vq2d  # noqa: E402
from egovlp.metrics import mq_metrics, nlq_metrics, vq2d_metrics  # noqa: E402
from heads.mq.predict import predict_mq  # noqa: E402
from heads.mq.train import train_mq  # noqa: E402
from heads.nlq.predict import predict_nlq  # noqa: E402
from heads.nlq.train import train_nlq  # noqa: E402
from heads.vq2d.predict import challenge_file, predict_vq2d  # noqa: E402
from heads.vq2d.train import train_vq2d  # noqa: E402

# clip features (NLQ, MQ), NLQ query text, frame grids (VQ2D)
EXTRACTIONS = (
    ("nlq", "nlq", "clip"),
    ("nlq", "moments", "clip"),
    ("text", "nlq", "text_{split}"),
    ("vq2d", "vq", "vq2d"),
)


def prepare(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    model = extraction_model(args.model, out)
    return synth_and_extract(out, args.videos, args.seed, model, EXTRACTIONS)


# ---- baselines -------------------------------------------------------------------------------------


def nlq_random(ann: Path, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    results = []
    for clip in read_nlq(ann):
        duration = (clip.clip_end_sec or 0.0) - (clip.clip_start_sec or 0.0)
        for q in clip.queries:
            if q.has_query:
                windows = np.sort(rng.uniform(0, duration, size=(5, 2)), axis=1).round(3).tolist()
                results.append(
                    {
                        "clip_uid": clip.clip_uid,
                        "annotation_uid": q.annotation_uid,
                        "query_idx": q.query_idx,
                        "predicted_times": windows,
                    }
                )
    return {"version": "1.0", "challenge": "ego4d_nlq_challenge", "results": results}


def mq_most_frequent(train: Path, val: Path) -> dict:
    labels = [lab for clip in read_moments(train) for lab in clip.labels if lab.primary]
    top = Counter(lab.label for lab in labels).most_common(1)[0][0]
    length = statistics.median(lab.end - lab.start for lab in labels)
    detections = {}
    for clip in read_moments(val):
        duration = (clip.clip_end_sec or 0.0) - (clip.clip_start_sec or 0.0)
        starts = np.arange(0.0, max(duration - length, 0.0) + 1e-9, length / 2)
        detections[clip.clip_uid] = [
            {
                "label": top,
                "score": 1.0 / (1 + i),
                "segment": [round(s, 3), round(min(s + length, duration), 3)],
            }
            for i, s in enumerate(starts)
        ]
    return {"version": "1.0", "challenge": "ego4d_moment_queries", "detect_results": detections}


def vq_centre_box(train: Path, val: Path) -> dict:
    tracks = [qs.response_track for c in read_vq2d(train) for qs in c.query_sets if qs.is_valid]
    k = int(statistics.median(len(t) for t in tracks))
    side = statistics.median((b.width * b.height) ** 0.5 for t in tracks for b in t)
    clips = read_vq2d(val)
    preds = {}
    for clip in clips:
        for qs in clip.query_sets:
            if not qs.is_valid:
                continue
            crop = qs.visual_crop
            w, h = crop.original_width or 2 * side, crop.original_height or 2 * side
            box = {
                "x1": w / 2 - side / 2,
                "y1": h / 2 - side / 2,
                "x2": w / 2 + side / 2,
                "y2": h / 2 + side / 2,
            }
            frames = range(max(0, qs.query_frame - k), qs.query_frame)
            preds[(clip.clip_uid, qs.annotation_idx, qs.query_set_id)] = {
                "bboxes": [{"fno": f, **box} for f in frames],
                "score": 1.0,
            }
    return challenge_file(read_json(val), clips, preds)


# ---- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", type=Path, help="model for extraction (default: demo-pretrained, else tiny untrained)"
    )
    p.add_argument("--videos", type=int, default=24, help="synthetic videos (a quarter go to val)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="override every head's epochs")
    p.add_argument("--out", type=Path, default=ROOT / "bench-output" / "heads")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the heads (1 is fastest for these tiny models on a busy 2-core box)",
    )
    p.add_argument(
        "--ablations",
        action="store_true",
        help="run benchmarks/ablations.py instead (NFM, PRVQL stages, ASL over 3 world seeds)",
    )
    args, rest = p.parse_known_args(argv)
    if args.ablations:  # its own options follow (--seeds, --videos, --epochs, --out)
        from benchmarks.ablations import main as ablations_main

        return ablations_main(rest + (["--epochs", str(args.epochs)] if args.epochs else []))
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    t0 = time.perf_counter()
    paths = prepare(args, out)
    data, feats, runs = paths["data"], paths["feats"], out / "runs"
    extract_s = time.perf_counter() - t0
    over = {"epochs": args.epochs, "seed": args.seed}
    quiet = {"show_progress": True}
    rows, timings = {}, {}

    t = time.perf_counter()
    train_nlq(
        data / "nlq_train.json",
        feats / "clip",
        feats / "text_train",
        runs / "nlq",
        config=find_config("heads", "nlq"),
        overrides=over,
        **quiet,
    )
    pred = predict_nlq(
        runs / "nlq",
        data / "nlq_val.json",
        feats / "clip",
        feats / "text_val",
        out / "nlq_pred.json",
        **quiet,
    )
    gt = read_json(data / "nlq_val.json")
    rows["nlq"] = {
        "head": nlq_metrics(gt, pred),
        "baseline": nlq_metrics(gt, nlq_random(data / "nlq_val.json", args.seed)),
    }
    timings["nlq"] = time.perf_counter() - t

    t = time.perf_counter()
    train_mq(
        data / "moments_train.json",
        [str(feats / "clip")],
        runs / "mq",
        config=find_config("heads", "mq"),
        overrides=over,
        **quiet,
    )
    pred = predict_mq(
        runs / "mq",
        data / "moments_val.json",
        [str(feats / "clip")],
        out / "mq_pred.json",
        **quiet,
    )
    gt = read_json(data / "moments_val.json")
    base = mq_most_frequent(data / "moments_train.json", data / "moments_val.json")
    rows["mq"] = {"head": mq_metrics(gt, pred), "baseline": mq_metrics(gt, base)}
    timings["mq"] = time.perf_counter() - t

    t = time.perf_counter()
    train_vq2d(
        data / "vq_train.json",
        feats / "vq2d",
        runs / "vq2d",
        config=find_config("heads", "vq2d"),
        overrides=over,
        **quiet,
    )
    pred = predict_vq2d(runs / "vq2d", data / "vq_val.json", feats / "vq2d", out / "vq2d_pred.json", **quiet)
    gt = read_json(data / "vq_val.json")
    rows["vq2d"] = {
        "head": vq2d_metrics(gt, pred),
        "baseline": vq2d_metrics(gt, vq_centre_box(data / "vq_train.json", data / "vq_val.json")),
    }
    timings["vq2d"] = time.perf_counter() - t

    keys = {
        "nlq": ["R1@0.3", "R5@0.3", "R1@0.5", "R5@0.5", "mIoU"],
        "mq": ["mAP", "mAP@0.5", "R1x@0.5"],
        "vq2d": ["tAP25", "stAP25", "success", "recovery"],
    }
    print(f"model: {paths['model']}  videos: {args.videos}  features+synth: {extract_s:.0f}s")
    print(f"{'task':<6} {'metric':<9} {'head':>8} {'baseline':>9}   train+predict")
    for task, metric_names in keys.items():
        for i, name in enumerate(metric_names):
            tail = f"   {timings[task]:.0f}s" if i == 0 else ""
            print(
                f"{task:<6} {name:<9} {rows[task]['head'][name]:>8.2f} {rows[task]['baseline'][name]:>9.2f}{tail}"
            )
    result = {
        "model": str(paths["model"]),
        "videos": args.videos,
        "epochs": args.epochs or "config",
        "metrics": rows,
        "seconds": timings,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

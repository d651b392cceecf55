"""The seeds' methods as measured ablations: each pair of runs differs in one switch, over 3 world seeds.

    python benchmarks/ablations.py [--seeds 0 1 2] [--videos 12] [--epochs 20] [--out bench-output/ablations]
    python benchmarks/bench_heads.py --ablations     # the same

Rows (val split, official metrics, mean and spread over the world seeds):
- VQ2D negative-frame mining (NFM) on vs off. On (the config's default): 30% of the training windows
  are drawn anywhere in the search window, so mostly frames without the object, and the objectness
  loss keeps only the hardest negatives (`positive_window_prob` 0.7, `neg_ratio` 3, `min_negatives`
  64). Off: every window overlaps the response track and every negative anchor counts the same
  (`positive_window_prob` 1.0, `min_negatives` 10^9: no mining).
- VQ2D with 0, 1 and 2 PRVQL refinement stages (`refine_stages`).
- MQ with and without ASL (`asl`).
- NLQ: the head has no ASL switch, so there is no NLQ row.

World properties each method addresses, all in the default synthetic world (no switch needed):
- long absences (NFM): a VQ2D query object is in view for one 3-4 s visit of a 40 s video, so
  most of the search window shows frames without it;
- look-alike distractors (NFM, PRVQL): several nouns share a colour (red cup / red apple, yellow
  banana / sponge / cheese, orange scissors / jar / carrot) and shapes repeat across colours;
- short actions (ASL): actions last 2-3.5 s, 3-5 feature rows at the 1.875 rows/s NLQ grid.

Every run trains on the train split of its world and is scored on val; nothing is tuned here.
Writes `{out}/ablations.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import extraction_model, synth_and_extract  # noqa: E402

from egovlp.formats.ego4d import read_json  # noqa: E402
from egovlp.metrics import mq_metrics, vq2d_metrics  # noqa: E402
from heads.mq.predict import predict_mq  # noqa: E402
from heads.mq.train import train_mq  # noqa: E402
from heads.vq2d.predict import predict_vq2d  # noqa: E402
from heads.vq2d.train import train_vq2d  # noqa: E402

CONFIGS = ROOT / "configs" / "heads"
NO_NFM = {"positive_window_prob": 1.0, "min_negatives": 10**9}

# (row name, task, config overrides): rows of one group differ in one switch only
RUNS = [
    ("vq2d NFM on (default)", "vq2d", {}),
    ("vq2d NFM off", "vq2d", NO_NFM),
    ("vq2d refine 0 (default)", "vq2d", {}),
    ("vq2d refine 1", "vq2d", {"refine_stages": 1}),
    ("vq2d refine 2", "vq2d", {"refine_stages": 2}),
    ("mq ASL off (default)", "mq", {"asl": False}),
    ("mq ASL on", "mq", {"asl": True}),
]
METRICS = {"vq2d": ("stAP25", "tAP25", "success", "recovery"), "mq": ("mAP", "mAP@0.5", "R1x@0.5")}


def prepare(out: Path, videos: int, seed: int, model: Path) -> dict[str, Path]:
    """One world and the features these rows read: clip features (MQ) and frame grids (VQ2D)."""
    extractions = (("nlq", "moments", "clip"), ("vq2d", "vq", "vq2d"))
    return synth_and_extract(
        out, videos, seed, model, extractions, "--fho-videos", "2", "--egomask-videos", "3"
    )


def run_one(task: str, over: dict, paths: dict, work: Path, epochs: int | None, seed: int) -> dict:
    data, feats = paths["data"], paths["feats"]
    overrides = {"epochs": epochs, "seed": seed, **over}
    if task == "vq2d":
        train_vq2d(
            data / "vq_train.json",
            feats / "vq2d",
            work,
            config=CONFIGS / "vq2d.yaml",
            overrides=overrides,
            show_progress=False,
        )
        pred = predict_vq2d(
            work, data / "vq_val.json", feats / "vq2d", work / "pred.json", show_progress=False
        )
        return vq2d_metrics(read_json(data / "vq_val.json"), pred)
    train_mq(
        data / "moments_train.json",
        [str(feats / "clip")],
        work,
        config=CONFIGS / "mq.yaml",
        overrides=overrides,
        show_progress=False,
    )
    pred = predict_mq(
        work, data / "moments_val.json", [str(feats / "clip")], work / "pred.json", show_progress=False
    )
    return mq_metrics(read_json(data / "moments_val.json"), pred)


def summarize(per_seed: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for name, rows in per_seed.items():
        task = next(t for n, t, _ in RUNS if n == name)
        out[name] = {}
        for m in METRICS[task]:
            values = [r[m] for r in rows]
            out[name][m] = {
                "mean": statistics.fmean(values),
                "std": statistics.pstdev(values),
                "values": values,
            }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="world seeds (and training seeds)")
    p.add_argument("--videos", type=int, default=8, help="synthetic videos per world (a quarter go to val)")
    p.add_argument("--epochs", type=int, default=15, help="epochs of every head (the same for both sides)")
    p.add_argument("--model", type=Path, help="model for extraction (default as bench_heads.py)")
    p.add_argument("--out", type=Path, default=ROOT / "bench-output" / "ablations")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    per_seed: dict[str, list[dict]] = {name: [] for name, _, _ in RUNS}
    t0 = time.perf_counter()
    model = None
    for seed in args.seeds:
        paths = prepare(out / f"seed{seed}", args.videos, seed, extraction_model(args.model, out))
        model = paths["model"]
        cache: dict[tuple[str, str], dict] = {}  # identical configurations run once
        for name, task, over in RUNS:
            key = (task, json.dumps(over, sort_keys=True))
            if key not in cache:
                work = out / f"seed{seed}" / "runs" / name.split(" (")[0].replace(" ", "_")
                cache[key] = run_one(task, over, paths, work, args.epochs, seed)
                print(
                    f"seed {seed} {name}: {json.dumps({m: round(cache[key][m], 4) for m in METRICS[task]})}",
                    file=sys.stderr,
                    flush=True,
                )
            per_seed[name].append(cache[key])
    table = summarize(per_seed)
    seconds = time.perf_counter() - t0
    print(
        f"model: {model}  videos: {args.videos}  epochs: {args.epochs}  seeds: {args.seeds}  {seconds:.0f}s"
    )
    for name, metrics in table.items():
        cells = "  ".join(f"{m} {v['mean']:.3f} +- {v['std']:.3f}" for m, v in metrics.items())
        print(f"{name:<24} {cells}")
    result = {
        "model": str(model),
        "videos": args.videos,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "rows": table,
        "seconds": seconds,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablations.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The grounding head against its baselines on the synthetic EgoMask split (val), EgoMask's metrics.

    python benchmarks/bench_grounding.py [--egomask-videos 15] [--epochs 20] [--out bench-output/grounding]

Steps, each the real command: `egovlp synth` (its EgoMask split) -> `egovlp extract` (preset vq2d on
`egomask/{split}/videos.txt`, preset text --text-tokens on `expressions_nlq.json`) -> `egovlp heads
train grounding` on train -> predict val -> `egovlp eval grounding`. Baselines in the same table
(heads/grounding/baselines.py): a centred box on every frame, the same box on the ground-truth frames
(oracle presence), and the training-free text-to-patch similarity. Writes `{out}/results.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import egovlp, extraction_model  # noqa: E402

from heads.grounding.baselines import centre_box, median_box_size, text_patch_similarity  # noqa: E402
from heads.grounding.dataset import load_samples  # noqa: E402

KEYS = ("IoU_gold_pred", "IoU_gold", "IoU_all", "T_recall", "J&F", "presence_F1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--egomask-videos", type=int, default=15, help="grounding videos (a third go to val)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument(
        "--model", type=Path, help="model for extraction (default: demo-pretrained, else tiny untrained)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench-output" / "grounding")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out.resolve()
    data, feats = out / "data", out / "features"
    t0 = time.perf_counter()
    if not (data / "world.json").is_file():
        egovlp(
            "synth",
            str(data),
            "--videos",
            "2",
            "--fho-videos",
            "2",
            "--duration",
            "8",
            "--short-side",
            "128",
            "--egomask-videos",
            str(args.egomask_videos),
            "--seed",
            str(args.seed),
        )
    model = extraction_model(args.model, out)
    for split in ("train", "val"):
        ego = data / "egomask" / split
        egovlp(
            "extract",
            "--model",
            str(model),
            "--preset",
            "vq2d",
            "--input",
            str(ego / "videos.txt"),
            "--out",
            str(feats / "grids"),
            "--no-progress",
        )
        egovlp(
            "extract",
            "--model",
            str(model),
            "--preset",
            "text",
            "--text-tokens",
            "--input",
            str(ego / "expressions_nlq.json"),
            "--out",
            str(feats / f"text_{split}"),
            "--no-progress",
        )
    prep_s = time.perf_counter() - t0
    train, val = data / "egomask" / "train", data / "egomask" / "val"
    t = time.perf_counter()
    egovlp(
        "heads",
        "train",
        "grounding",
        "--gt",
        str(train),
        "--features",
        str(feats / "grids"),
        "--text-features",
        str(feats / "text_train"),
        "--out",
        str(out / "run"),
        "--epochs",
        str(args.epochs),
        "--seed",
        str(args.seed),
        "--quiet",
        "--threads",
        "1",
    )
    egovlp(
        "heads",
        "predict",
        "grounding",
        "--checkpoint",
        str(out / "run"),
        "--gt",
        str(val),
        "--features",
        str(feats / "grids"),
        "--text-features",
        str(feats / "text_val"),
        "--out",
        str(out / "pred" / "head"),
        "--quiet",
    )
    head_s = time.perf_counter() - t
    samples = load_samples(val, feats / "grids", feats / "text_val", with_targets=True)
    size = median_box_size(train)
    centre_box(samples, size, out / "pred" / "centre_box", oracle=False)
    centre_box(samples, size, out / "pred" / "oracle_presence_centre_box", oracle=True)
    import egovlp as lib

    tower = lib.load_model(str(model))
    text_cls = torch.load(feats / "text_val" / "text_cls.pt", map_location="cpu", weights_only=True)
    text_patch_similarity(samples, tower, text_cls, out / "pred" / "text_patch_similarity")
    rows = {}
    for name in ("head", "centre_box", "oracle_presence_centre_box", "text_patch_similarity"):
        rows[name] = json.loads(
            egovlp("eval", "grounding", "--gt", str(val), "--pred", str(out / "pred" / name), capture=True)
        )
    print(
        f"model: {model}  val expressions: {rows['head']['n_expressions']}  synth+extract {prep_s:.0f}s  "
        f"head train+predict {head_s:.0f}s"
    )
    print(f"{'method':<28}" + "".join(f"{k:>14}" for k in KEYS))
    for name, r in rows.items():
        print(f"{name:<28}" + "".join(f"{r[k]:>14.2f}" for k in KEYS))
    print(f"{'IoU_gold_pred by subset':<28}" + "".join(f"{s:>14}" for s in ("short", "medium", "long")))
    for name, r in rows.items():
        print(
            f"{name:<28}"
            + "".join(
                f"{r['subsets'].get(s, {}).get('IoU_gold_pred', float('nan')):>14.2f}"
                for s in ("short", "medium", "long")
            )
        )
    result = {
        "model": str(model),
        "epochs": args.epochs,
        "egomask_videos": args.egomask_videos,
        "rows": rows,
        "box_size": size,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

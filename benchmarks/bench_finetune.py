"""OSCC and PNR on the synthetic world (the EgoVLP report's Table 2, in miniature).

    python benchmarks/bench_finetune.py [--pretrained DIR] [--out bench-output/finetune]

Three starting points, each scored on the val clips with the C.7 metrics (`egovlp eval oscc|pnr`):
- the video tower fine-tuned from the video-text pretrained tiny model: `--pretrained DIR`, else
  `demo-output/pretrain/final` when `make demo` has run (tiny-112: 112 px, 4 frames; fine-tuned at
  64 px with its pos_embed resampled to the 4x4 grid and its temporal_embed padded to 16 frames),
  else a short EgoNCE pretraining made here (`--pretrain-steps` on 16 narrated videos' shards, at
  64 px);
- the same architecture fine-tuned from random initialisation;
- "always the same answer": the majority class of the train clips (OSCC) and the one frame index
  with the smallest mean error over the train clips (PNR).
The world is `egovlp synth` with `--fho-videos` state-change videos (4 clips each, a quarter of the
videos val), rendered once into `{out}/data-v*-fho*-*px-seed*/videos/`. Fine-tuning runs at `--img-size` (64 px; a pretrained model of another size has its position
embedding resampled) with every clip decoded once (`--cache`), for more epochs and at a larger
learning rate than the report's defaults (10 epochs, 3e-5), which suit a large model. Prints a table, writes
`{out}/results.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from egovlp.config import config_from_dict  # noqa: E402
from egovlp.formats.fho import pnr_index_to_frame, read_fho  # noqa: E402
from egovlp.metrics.fho import oscc_metrics, pnr_metrics  # noqa: E402
from finetune.config import FinetuneConfig  # noqa: E402
from finetune.predict import predict  # noqa: E402
from finetune.train import train  # noqa: E402

# the tiny model at 64 px: 4x4 patches of 16 px, the towers of configs/model/tiny.yaml; like the base
# EgoVLP (B.1) its temporal_embed holds 16 frames while pretraining feeds 4
BENCH_MODEL = {
    "video": {
        "img_size": 64,
        "patch_size": 16,
        "embed_dim": 128,
        "depth": 4,
        "num_heads": 4,
        "mlp_ratio": 4.0,
        "num_frames": 16,
    },
    "text": {
        "dim": 128,
        "n_layers": 2,
        "n_heads": 4,
        "hidden_dim": 512,
        "vocab_size": 30522,
        "max_position_embeddings": 64,
    },
    "projection_dim": 256,
}


def log(msg: str) -> None:
    print(f"[bench_finetune] {msg}", file=sys.stderr, flush=True)


def make_world(args: argparse.Namespace, data: Path, pretrain: bool) -> None:
    from egovlp.synth import synthesize

    if (data / "world.json").is_file():
        return
    videos = args.videos if pretrain else 2  # the narrated world only feeds the pretraining
    synthesize(
        data,
        videos=videos,
        duration=30.0,
        short_side=args.short_side,
        fho_videos=args.fho_videos,
        workers=2,
        seed=args.seed,
    )


def pretrain_here(args: argparse.Namespace, data: Path, out: Path) -> Path:
    from pretrain.config import load_pretrain_config
    from pretrain.shards import run_shards
    from pretrain.train import train as pretrain

    final = out / "pretrain" / "final"
    if (final / "model.safetensors").is_file():
        return final
    if not (data / "shards" / "sizes.json").is_file():
        run_shards(
            data / "egoclip.csv",
            data / "videos",
            data / "shards",
            frames=4,
            size=args.img_size,
            shard_size=64,
            workers=2,
            progress=False,
        )
    model_yaml = out / "tiny-64.yaml"
    model_yaml.write_text(yaml.safe_dump(BENCH_MODEL))
    overrides = [
        f"model={model_yaml}",
        f"output_dir={out / 'pretrain'}",
        f"data.shards={data / 'shards'}",
        f"data.taxonomy={data}",
        "data.batch_size=16",
        "data.num_workers=1",
        "data.shuffle_buffer=200",
        f"train.steps={args.pretrain_steps}",
        "train.lr=7e-4",
        "train.warmup_steps=20",
        "train.checkpoint_every=0",
        "train.log_every=10",
    ]
    pretrain(load_pretrain_config(None, overrides))
    return final


def constant_predictions(train_clips, val_clips) -> tuple[list[dict], list[dict], dict]:
    """Majority class (OSCC) and the best single PNR index on the train clips, applied to val."""
    majority = Counter(c.state_change for c in train_clips).most_common(1)[0][0]
    positives = [c for c in train_clips if c.state_change]

    def error(i: int) -> float:
        return sum(
            abs(pnr_index_to_frame(c.parent_start_frame, c.parent_end_frame, i) - c.parent_pnr_frame) / c.fps
            for c in positives
        )

    best = min(range(16), key=error)
    oscc = [{"unique_id": c.unique_id, "state_change": majority} for c in val_clips]
    pnr = [
        {
            "unique_id": c.unique_id,
            "pnr_frame": pnr_index_to_frame(c.parent_start_frame, c.parent_end_frame, best),
        }
        for c in val_clips
    ]
    return oscc, pnr, {"majority": majority, "pnr_index": best}


def _options(args, task: str) -> dict:
    return {
        "img_size": args.img_size,
        "epochs": args.epochs_oscc if task == "oscc" else args.epochs_pnr,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup_steps,
        "seed": args.seed,
    }


def finetune_and_score(args, name: str, init: str, model_yaml: str, data: Path, out: Path, gt) -> dict:
    """Fine-tune for OSCC and PNR in this process, one after the other; score the val predictions."""
    row: dict = {}
    for task in ("oscc", "pnr"):
        run_dir = out / "runs" / f"{name}-{task}"
        options = {
            "task": task,
            "ann": str(data / "fho_oscc-pnr_train.json"),
            "videos": str(data / "videos"),
            "output_dir": str(run_dir),
            "init": init,
            "model": model_yaml,
            "num_workers": 0,
            "cache": True,
            "checkpoint_every": 10_000,
            **_options(args, task),
        }
        t0 = time.perf_counter()
        train(config_from_dict(FinetuneConfig, options, "bench"), progress=False)
        preds = predict(
            run_dir,
            data / "fho_oscc-pnr_val.json",
            data / "videos",
            run_dir / "pred.json",
            task=task,
            num_workers=0,
        )
        row[task] = oscc_metrics(gt, preds) if task == "oscc" else pnr_metrics(gt, preds)
        row[f"{task}_seconds"] = round(time.perf_counter() - t0, 1)
        log(f"{name} {task}: {row[task]} ({row[f'{task}_seconds']} s)")
    return row


def finetune_in_parallel(args, starts: dict[str, tuple[str, str]], data: Path, out: Path, gt) -> dict:
    """The same runs as `egovlp finetune` + `finetune predict` subprocesses, all at once (one thread each)."""
    import os
    import subprocess

    procs = {}
    for name, (init, model_yaml) in starts.items():
        for task in ("oscc", "pnr"):
            run_dir = out / "runs" / f"{name}-{task}"
            train_cmd = [
                "finetune",
                task,
                "--ann",
                str(data / "fho_oscc-pnr_train.json"),
                "--videos",
                str(data / "videos"),
                "--out",
                str(run_dir),
                "--init",
                init,
                "--workers",
                "0",
                "--cache",
                "--checkpoint-every",
                "10000",
                "--quiet",
            ]
            train_cmd += ["--model", model_yaml] if model_yaml else []
            for key, value in _options(args, task).items():
                train_cmd += [f"--{key.replace('_', '-')}", str(value)]
            pred_cmd = [
                "finetune",
                "predict",
                task,
                "--checkpoint",
                str(run_dir),
                "--ann",
                str(data / "fho_oscc-pnr_val.json"),
                "--videos",
                str(data / "videos"),
                "--out",
                str(run_dir / "pred.json"),
                "--workers",
                "0",
                "--quiet",
            ]
            egovlp = f"{sys.executable} -m egovlp "
            script = egovlp + " ".join(train_cmd) + " && " + egovlp + " ".join(pred_cmd)
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            log_file = open(out / "runs" / f"{name}-{task}.log", "w")  # noqa: SIM115 - closed below
            procs[(name, task)] = (
                time.perf_counter(),
                log_file,
                subprocess.Popen(
                    ["bash", "-c", script], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
                ),
            )
    rows: dict = {name: {} for name in starts}
    for (name, task), (t0, log_file, proc) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"bench_finetune: {name} {task} failed, see {log_file.name}")
        log_file.close()
        preds = json.loads((out / "runs" / f"{name}-{task}" / "pred.json").read_text())
        rows[name][task] = oscc_metrics(gt, preds) if task == "oscc" else pnr_metrics(gt, preds)
        rows[name][f"{task}_seconds"] = round(time.perf_counter() - t0, 1)
        log(f"{name} {task}: {rows[name][task]}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench-output/finetune")
    p.add_argument(
        "--pretrained", default=None, help="a pretrained EgoVLP folder or .pth (default: see above)"
    )
    p.add_argument("--videos", type=int, default=16, help="narrated videos for the pretraining here")
    p.add_argument(
        "--fho-videos", type=int, default=80, help="state-change videos, 4 clips each; a quarter val"
    )
    p.add_argument("--short-side", type=int, default=96, help="rendered short side (decoded at 74 for 64 px)")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--pretrain-steps", type=int, default=150)
    # a tiny model trained for minutes: more epochs and a larger lr than the report's 10 and 3e-5
    p.add_argument("--epochs-oscc", type=int, default=16, help="over the 240 train clips")
    p.add_argument("--epochs-pnr", type=int, default=24, help="over the 120 with a state change")
    p.add_argument("--lr", type=float, default=7e-4, help="the demo pretraining's lr")
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parallel", action="store_true", help="the four fine-tunings as concurrent processes")
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    out = (ROOT / args.out).resolve()
    demo = ROOT / "demo-output" / "pretrain" / "final"
    pretrained = (
        Path(args.pretrained) if args.pretrained else demo if (demo / "model.safetensors").is_file() else None
    )
    # one folder per world, so a rerun with other world options never reuses a stale one
    narrated = 2 if pretrained else args.videos  # the narrated world only feeds a pretraining here
    data = out / f"data-v{narrated}-fho{args.fho_videos}-{args.short_side}px-seed{args.seed}"
    make_world(args, data, pretrain=pretrained is None)
    timing = {"synth": round(time.perf_counter() - t_start, 1)}
    source = (
        "given"
        if args.pretrained
        else "demo"
        if pretrained
        else f"pretrained here ({args.pretrain_steps} steps)"
    )
    if pretrained is None:
        t0 = time.perf_counter()
        pretrained = pretrain_here(args, data, out)
        timing["pretrain"] = round(time.perf_counter() - t0, 1)
    log(f"pretrained model: {pretrained} ({source})")
    # random init gets the pretrained model's own architecture
    arch = pretrained / "config.json" if pretrained.is_dir() else None
    model_yaml = str(arch) if arch and arch.is_file() else str(out / "tiny-64.yaml")

    gt = json.loads((data / "fho_oscc-pnr_val.json").read_text())
    train_clips, val_clips = (
        read_fho(data / "fho_oscc-pnr_train.json"),
        read_fho(data / "fho_oscc-pnr_val.json"),
    )
    oscc_c, pnr_c, const = constant_predictions(train_clips, val_clips)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if args.parallel:
        rows = finetune_in_parallel(
            args, {"pretrained": (str(pretrained), ""), "random": ("random", model_yaml)}, data, out, gt
        )
    else:
        rows = {
            "pretrained": finetune_and_score(args, "pretrained", str(pretrained), "", data, out, gt),
            "random": finetune_and_score(args, "random", "random", model_yaml, data, out, gt),
        }
    rows = {
        **rows,
        "constant": {"oscc": oscc_metrics(gt, oscc_c), "pnr": pnr_metrics(gt, pnr_c), **const},
    }
    timing["total"] = round(time.perf_counter() - t_start, 1)
    result = {
        "pretrained_model": str(pretrained),
        "pretrained_source": source,
        "train_clips": len(train_clips),
        "val_clips": len(val_clips),
        "val_state_changes": sum(c.state_change for c in val_clips),
        "options": vars(args),
        "rows": rows,
        "seconds": timing,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print("| start point | OSCC accuracy (%) | PNR error (s) |")
    print("| --- | --- | --- |")
    labels = {
        "pretrained": "fine-tuned from the pretrained tiny model",
        "random": "fine-tuned from random init",
        "constant": "always the same answer",
    }
    for key, row in rows.items():
        print(f"| {labels[key]} | {row['oscc']['accuracy']:.1f} | {row['pnr']['error_sec']:.3f} |")
    print(f"\n{len(val_clips)} val clips ({result['val_state_changes']} with a state change); {timing}")
    pre, rnd = rows["pretrained"], rows["random"]
    print(
        f"pretraining {'helped' if pre['oscc']['accuracy'] > rnd['oscc']['accuracy'] else 'did not help'} OSCC "
        f"({pre['oscc']['accuracy']:.1f} vs {rnd['oscc']['accuracy']:.1f} %) and "
        f"{'helped' if pre['pnr']['error_sec'] < rnd['pnr']['error_sec'] else 'did not help'} PNR "
        f"({pre['pnr']['error_sec']:.3f} vs {rnd['pnr']['error_sec']:.3f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

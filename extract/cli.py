"""`egovlp extract`: batch features for NLQ / MQ / VQ2D / text (DESIGN.md A, B.6; docs/extract.md).

    egovlp extract --model M --preset nlq --input nlq_val.json --videos ROOT --out feats/
    torchrun --nproc-per-node 8 -m extract.cli --model M --preset nlq --input ... --out feats/
    egovlp extract --merge feats/          # join the ranks' manifests (automatic with one process)

Prints one JSON summary on stdout; progress goes to stderr. Exit code 1 if any input failed (with
a summary line on stderr), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import torch
import yaml

from egovlp.errors import InputError
from extract.cpus import default_workers
from extract.manifest import ManifestRow, merge_manifests, read_manifest, write_rank_manifest

logger = logging.getLogger(__name__)

PRESETS = ("nlq", "mq", "vq2d", "text")
OPTIONS_FILE = "extract_options.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="egovlp extract", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint (.pth) or model directory")
    p.add_argument("--config", default=None, help="model YAML for a .pth of another architecture")
    p.add_argument("--preset", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--input", help="folder of videos, .txt list of video paths, or an Ego4D annotation .json")
    p.add_argument("--out", help="output folder")
    p.add_argument(
        "--videos", default=None, help="video root for annotation inputs (default: INPUT's folder/videos)"
    )
    p.add_argument(
        "--format", default="pt", help="nlq/mq feature files: pt (VSLNet/VSGN) or npy (ActionFormer)"
    )
    p.add_argument(
        "--compat", action="store_true", help="the published 1.87 rows/s sampling (docs/extract.md)"
    )
    p.add_argument("--save-768", action="store_true", help="also write {name}.768.pt, the pre-projection CLS")
    p.add_argument("--per-video", action="store_true", help="annotation input: whole {video_uid} outputs")
    p.add_argument("--text-tokens", action="store_true", help="text preset: also per-token features")
    p.add_argument("--batch-size", type=int, default=None, help="rows per model call (default 32 GPU, 8 CPU)")
    p.add_argument(
        "--workers", type=int, default=None, help="decoding processes (default: cores - 1, at most 8)"
    )
    p.add_argument("--short-side", type=int, default=None, help="decode at this short side (default: native)")
    p.add_argument("--chunk-rows", type=int, default=64, help="rows decoded per sequential read")
    p.add_argument(
        "--no-pin-cpus", action="store_true",
        help="CPU model: do not give decode workers and the model separate cores (extract/cpus.py)",
    )  # fmt: skip
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda:LOCAL_RANK if available)")
    p.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16")
    p.add_argument("--rank", type=int, default=None, help="this process's rank (default: env RANK)")
    p.add_argument(
        "--world-size", type=int, default=None, help="number of processes (default: env WORLD_SIZE)"
    )
    p.add_argument("--merge", metavar="OUT", default=None, help="only merge OUT/manifest.rank*.parquet")
    p.add_argument("--defaults", default=None, help="YAML of option defaults (configs/extract/*.yaml)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.defaults:
        path = Path(args.defaults)
        if not path.is_file():
            raise InputError(f"--defaults {path}: file not found")
        data = yaml.safe_load(path.read_text()) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(k.replace("-", "_") for k in data) - known)
        if not isinstance(data, dict) or unknown:
            raise InputError(f"--defaults {path}: unknown options {unknown}")
        parser.set_defaults(**{k.replace("-", "_"): v for k, v in data.items()})
    return parser.parse_args(argv)


def _validate(args: argparse.Namespace) -> None:
    for flag in ("model", "preset", "input", "out"):
        if not getattr(args, flag):
            raise InputError(f"--{flag} is required")
    if args.preset not in PRESETS:
        raise InputError(f"--preset {args.preset!r}: choose one of {', '.join(PRESETS)}")
    if args.format not in ("pt", "npy"):
        raise InputError(f"--format {args.format!r}: choose pt or npy")
    if not Path(args.input).exists():
        raise InputError(f"--input {args.input}: not found")
    if not (os.path.exists(args.model)):
        raise InputError(f"--model {args.model}: not found")
    if args.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise InputError(f"--precision {args.precision!r}: choose auto, fp32, bf16 or fp16")
    for flag in ("batch_size", "chunk_rows", "short_side"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise InputError(f"--{flag.replace('_', '-')} {value}: must be positive")
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers {args.workers}: must be 0 or more")


def _rank_world(args: argparse.Namespace) -> tuple[int, int]:
    rank = args.rank if args.rank is not None else int(os.environ.get("RANK", 0))
    world = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"rank {rank} / world size {world}: need 0 <= rank < world size")
    return rank, world


def _device(args: argparse.Namespace) -> torch.device:
    if args.device:
        return torch.device(args.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def load_extract_model(args: argparse.Namespace, device: torch.device):
    import egovlp

    model = egovlp.load_model(args.model, config=args.config, device=str(device))
    precision = args.precision
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise InputError(f"--precision {precision}: half precision is for CUDA only; use fp32 on the CPU")
        model.autocast_dtype = None
    else:
        model.autocast_dtype = {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}.get(
            precision
        )
    return model


def _barrier_then_merge(out: Path, rank: int, world: int) -> Path | None:
    """With one process merge now; under torchrun (MASTER_ADDR set) wait for every rank, rank 0 merges."""
    if world == 1:
        return merge_manifests(out)
    if "MASTER_ADDR" not in os.environ:
        return None  # ranks started by hand: run `egovlp extract --merge OUT` when all are done
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(days=7))
    dist.barrier()
    path = merge_manifests(out) if rank == 0 else None
    dist.destroy_process_group()
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.merge:
        path = merge_manifests(args.merge)
        counts = Counter(r["status"] for r in read_manifest(path))
        print(json.dumps({"manifest": str(path), **counts}))
        return 1 if counts.get("failed") else 0
    _validate(args)
    rank, world = _rank_world(args)
    device = _device(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_name = Path(args.model).name
    cpu = device.type == "cpu"
    batch_size = args.batch_size or (8 if cpu else 32)
    workers = args.workers if args.workers is not None else default_workers()
    if cpu and workers and args.no_pin_cpus and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        # spinning OpenMP threads starve the decode workers on a shared CPU: leave them their cores
        torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - workers)))
    model = load_extract_model(args, device)
    if rank == 0:
        resolved = {k: v for k, v in vars(args).items() if k != "defaults"}
        resolved |= {"batch_size": batch_size, "workers": workers, "world_size": world, "device": str(device)}
        (out / OPTIONS_FILE).write_text(yaml.safe_dump(resolved, sort_keys=True))

    t0 = time.perf_counter()
    stats: dict = {}
    if args.preset == "text":
        rows = _run_text(args, model, out, model_name, batch_size, rank)
    else:
        from extract.inputs import resolve_inputs
        from extract.pipeline import ExtractOptions, extract_videos

        items = resolve_inputs(args.input, args.videos, per_video=args.per_video)
        opts = ExtractOptions(
            preset=args.preset, out=out, fmt=args.format, compat=args.compat, save_768=args.save_768,
            batch_size=batch_size, workers=workers, short_side=args.short_side, chunk_rows=args.chunk_rows,
            pin_cpus=not args.no_pin_cpus, model_name=model_name, progress=not args.no_progress, stats=stats,
        )  # fmt: skip
        rows = extract_videos(model, items, opts, rank, world)
    write_rank_manifest(rows, out, rank)
    manifest = _barrier_then_merge(out, rank, world)
    seconds = time.perf_counter() - t0
    return _report(rows, out, args.preset, manifest, seconds, stats, rank)


def _run_text(args, model, out: Path, model_name: str, batch_size: int, rank: int) -> list[ManifestRow]:
    from extract.text import extract_text

    if rank != 0:
        return []  # one file of queries: rank 0 does it, the others have nothing to do
    t0 = time.perf_counter()
    status, n = extract_text(
        model, args.input, out, model_name, tokens=args.text_tokens, batch_size=max(batch_size, 32),
        progress=not args.no_progress,
    )  # fmt: skip
    return [
        ManifestRow(
            Path(args.input).name, str(args.input), status, None, n, time.perf_counter() - t0, None, rank
        )
    ]


def _report(rows, out, preset, manifest, seconds, stats, rank) -> int:
    counts = Counter(r.status for r in rows)
    video_seconds = sum(r.duration or 0.0 for r in rows if r.status == "ok")
    summary = {
        "out": str(out),
        "preset": preset,
        "rank": rank,
        "ok": counts.get("ok", 0),
        "skipped": counts.get("skipped", 0),
        "failed": counts.get("failed", 0),
        "rows": sum(r.rows for r in rows if r.status == "ok"),
        "video_seconds": round(video_seconds, 3),
        "seconds": round(seconds, 3),
        "x_realtime": round(video_seconds / seconds, 3) if seconds > 0 else None,
        "manifest": str(manifest) if manifest else None,
    }
    print(json.dumps(summary))
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        names = ", ".join(r.name for r in failed[:5]) + (" ..." if len(failed) > 5 else "")
        print(
            f"egovlp extract: {len(failed)} of {len(rows)} inputs failed ({names}); see the manifest",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    # `torchrun -m extract.cli ...`: the dispatcher turns InputError into exit code 2 as usual
    from egovlp.cli import run

    sys.exit(run(["extract", *sys.argv[1:]]))

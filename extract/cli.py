"""`egovlp extract`: batch features for NLQ / MQ / VQ2D / text (DESIGN.md A, B.6; docs/extract.md).

    egovlp extract --model M --preset nlq --input nlq_val.json --videos ROOT --out feats/
    egovlp extract ... --engine ray [--ray-address ADDR]     # the same outputs, on a Ray cluster

Prints one JSON summary on stdout; progress goes to stderr. Exit code 1 if any input failed (with
a summary line on stderr), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import yaml
from pydantic import NonNegativeInt, PositiveInt
from pydantic.dataclasses import dataclass

from egovlp.cli_args import OneLineParser
from egovlp.config import STRICT_KEYS, find_config, load_config_file
from egovlp.errors import InputError
from egovlp.io import remove_stale_temps, write_bytes_atomic
from egovlp.precision import PRECISIONS, resolve_precision
from egovlp.validate import (
    non_negative_int,
    os_error_reason,
    output_dir,
    positive_int,
    resolve_device,
    write_error,
)
from extract.cpus import default_workers
from extract.manifest import MANIFEST, ManifestRow, write_manifest
from extract.options import ExtractOptions
from extract.outputs import check_folder_precision, recorded_precisions
from extract.pipeline import ENGINES, extract_videos
from extract.stage import ModelSpec, load_extract_model

logger = logging.getLogger(__name__)

PRESETS = ("nlq", "mq", "vq2d", "text")
OPTIONS_FILE = "extract_options.yaml"


@dataclass(config=STRICT_KEYS)
class ExtractDefaults:
    """What a `--defaults` YAML may set (configs/extract/*.yaml); the command line wins."""

    model: str | None = None
    config: str | None = None
    preset: str | None = None
    input: str | None = None
    out: str | None = None
    videos: str | None = None
    format: str | None = None
    compat: bool | None = None
    save_768: bool | None = None
    per_video: bool | None = None
    text_tokens: bool | None = None
    batch_size: PositiveInt | None = None
    workers: NonNegativeInt | None = None
    short_side: PositiveInt | None = None
    chunk_rows: PositiveInt | None = None
    no_pin_cpus: bool | None = None
    device: str | None = None
    precision: str | None = None
    allow_mixed_precision: bool | None = None
    engine: str | None = None
    ray_address: str | None = None
    replicas: PositiveInt | None = None


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="egovlp extract", description=__doc__.split("\n\n")[0])
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
    p.add_argument("--compat", action="store_true", help="the published reader's frames and rows (B.6)")
    p.add_argument("--save-768", action="store_true", help="also write {name}.768.pt, the pre-projection CLS")
    p.add_argument("--per-video", action="store_true", help="annotation input: whole {video_uid} outputs")
    p.add_argument("--text-tokens", action="store_true", help="text preset: also per-token features")
    p.add_argument(
        "--batch-size", type=positive_int, default=None, help="rows per model call (default 32 GPU, 8 CPU)"
    )
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        help="decoding processes (local; default cores - 1, at most 8) or decode tasks in flight (ray)",
    )
    p.add_argument(
        "--short-side", type=positive_int, default=None, help="decode at this short side (default: native)"
    )
    p.add_argument("--chunk-rows", type=positive_int, default=64, help="rows decoded per sequential read")
    p.add_argument(
        "--no-pin-cpus",
        action="store_true",
        help="CPU model: do not give decode workers and the model separate cores (extract/cpus.py)",
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument(
        "--precision",
        default="auto",
        help=f"{' | '.join(PRECISIONS)} (egovlp/precision.py: auto is bf16 on CUDA)",
    )
    p.add_argument(
        "--allow-mixed-precision",
        action="store_true",
        help="write into a folder holding features of another precision",
    )
    p.add_argument("--engine", default="local", help="local (default) or ray")
    p.add_argument("--ray-address", default=None, help="ray: the cluster to join (default: a local Ray)")
    p.add_argument(
        "--replicas", type=positive_int, default=None, help="ray: model replicas (default: one per GPU)"
    )
    p.add_argument(
        "--defaults", default=None, help="option defaults: a packaged name (nlq-gpu, nlq-ray) or a YAML"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.defaults:
        defaults = load_config_file(ExtractDefaults, find_config("extract", args.defaults))
        parser.set_defaults(**{k: v for k, v in vars(defaults).items() if v is not None})
    return parser.parse_args(argv)


def _validate(args: argparse.Namespace) -> None:
    for flag in ("model", "preset", "input", "out"):
        if not getattr(args, flag):
            raise InputError(f"--{flag} is required")
    if args.preset not in PRESETS:
        raise InputError(f"--preset {args.preset!r}: choose one of {', '.join(PRESETS)}")
    if args.format not in ("pt", "npy"):
        raise InputError(f"--format {args.format!r}: choose pt or npy")
    if args.engine not in ENGINES:
        raise InputError(f"--engine {args.engine!r}: choose one of {', '.join(ENGINES)}")
    if not Path(args.input).exists():
        raise InputError(f"--input {args.input}: not found")
    if not Path(args.model).exists():
        raise InputError(f"--model {args.model}: not found")


def _device_and_precision(args: argparse.Namespace) -> tuple[str, str]:
    """The model's device and precision name: resolved on this machine (local), or for the Ray
    cluster's replicas (ray); precision by `egovlp.precision.resolve_precision` either way."""
    if args.engine == "local" or args.preset == "text":
        device = str(resolve_device(args.device))
        return device, resolve_precision(args.precision, device).name
    from extract.ray_engine import cluster_device, cluster_precision

    device = cluster_device(args.ray_address, args.device)
    return device, cluster_precision(args.precision, device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _validate(args)
    started_ray = args.engine == "ray" and args.preset != "text" and _ray_started_here()
    try:
        return _main(args)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _ray_started_here() -> bool:
    import ray

    return not ray.is_initialized()


def _main(args: argparse.Namespace) -> int:
    device, precision = _device_and_precision(args)
    out = output_dir(args.out, "--out")
    # before anything is loaded or written: the folder keeps one precision (extract/outputs.py)
    recorded = recorded_precisions(out)
    check_folder_precision(out, precision, recorded, args.allow_mixed_precision)
    removed = remove_stale_temps(out)
    if removed:
        logger.info("removed %d temp files of killed runs in %s", removed, out)
    model_name = Path(args.model).name
    batch_size = args.batch_size or (32 if device.startswith("cuda") else 8)
    workers = (
        args.workers if args.workers is not None else (default_workers() if args.engine == "local" else 0)
    )
    # absolute: a Ray actor on another node resolves paths against its own working directory
    model_path, config_path = (str(Path(p).resolve()) if p else p for p in (args.model, args.config))
    spec = ModelSpec(model_path, config_path, device, precision)
    # under ray the actors load their own copy; this one gives the identity and sizes
    model = load_extract_model(
        spec if args.engine == "local" or args.preset == "text" else ModelSpec(model_path, config_path)
    )
    resolved = {k: v for k, v in vars(args).items() if k != "defaults"}
    resolved |= {"batch_size": batch_size, "workers": workers, "device": device}
    resolved |= {"precision": precision, "precision_requested": args.precision}
    try:
        write_bytes_atomic(yaml.safe_dump(resolved, sort_keys=True).encode(), out / OPTIONS_FILE)
    except OSError as err:
        raise write_error(out / OPTIONS_FILE, err) from None

    t0 = time.perf_counter()
    if args.preset == "text":
        rows = [_run_text(args, model, out, model_name, batch_size, recorded)]
    else:
        from extract.inputs import resolve_inputs

        items = resolve_inputs(args.input, args.videos, per_video=args.per_video)
        opts = ExtractOptions(
            preset=args.preset,
            out=out,
            fmt=args.format,
            compat=args.compat,
            save_768=args.save_768,
            batch_size=batch_size,
            workers=workers,
            short_side=args.short_side,
            chunk_rows=args.chunk_rows,
            pin_cpus=not args.no_pin_cpus,
            model_name=model_name,
            progress=not args.no_progress,
            engine=args.engine,
            ray_address=args.ray_address,
            replicas=args.replicas,
            allow_mixed_precision=args.allow_mixed_precision,
        )
        rows = extract_videos(model, items, opts, spec, recorded).rows
    manifest, manifest_error = None, None
    try:
        manifest = write_manifest(rows, out)
    except OSError as err:
        manifest_error = f"cannot write {out / MANIFEST} ({os_error_reason(err)})"
    seconds = time.perf_counter() - t0
    return _report(rows, out, args.preset, precision, manifest, manifest_error, seconds)


def _run_text(
    args: argparse.Namespace,
    model,
    out: Path,
    model_name: str,
    batch_size: int,
    recorded: dict[str, str | None],
) -> ManifestRow:
    from extract.text import TEXT_NAME, extract_text

    t0 = time.perf_counter()
    try:
        status, n = extract_text(
            model,
            args.input,
            out,
            model_name,
            tokens=args.text_tokens,
            batch_size=max(batch_size, 32),
            progress=not args.no_progress,
            redo=recorded.get(TEXT_NAME) != model.precision,
        )
    except OSError as err:  # a full or forbidden disk: one line naming the folder
        raise write_error(out, err) from None
    return ManifestRow(
        Path(args.input).name, str(args.input), status, None, n, time.perf_counter() - t0, None
    )


def _report(rows, out, preset, precision, manifest, manifest_error, seconds) -> int:
    counts = Counter(r.status for r in rows)
    video_seconds = sum(r.duration or 0.0 for r in rows if r.status == "ok")
    summary = {
        "out": str(out),
        "preset": preset,
        "precision": precision,
        "ok": counts.get("ok", 0),
        "skipped": counts.get("skipped", 0),
        "failed": counts.get("failed", 0),
        "rows": sum(r.rows for r in rows if r.status == "ok"),
        "video_seconds": round(video_seconds, 3),
        "seconds": round(seconds, 3),
        "x_realtime": round(video_seconds / seconds, 3) if seconds > 0 else None,
        "manifest": str(manifest) if manifest else None,
    }
    if manifest_error:
        summary["manifest_error"] = manifest_error
    print(json.dumps(summary))
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        names = ", ".join(r.name for r in failed[:5]) + (" ..." if len(failed) > 5 else "")
        where = "see the manifest" if manifest else "the manifest was not written"
        print(
            f"egovlp extract: {len(failed)} of {len(rows)} inputs failed ({names}); {where}", file=sys.stderr
        )
    if manifest_error:
        print(f"egovlp extract: {manifest_error}", file=sys.stderr)
    return 1 if failed or manifest_error else 0


if __name__ == "__main__":
    from egovlp.cli import run

    sys.exit(run(["extract", *sys.argv[1:]]))

"""`egovlp serve --model M [--index INDEX_DIR] ...`: validate, load, then start uvicorn.

Every setting is checked and the model and index are loaded before the server starts, so a broken
setup (a random-bytes model, a corrupt index, `--device cuda` without a GPU, `--max-batch 0`,
`--port 99999`, an index from other weights) is one line and exit 2, never a "healthy" server.
With `--workers N` each uvicorn worker process loads its own copy (after the same check here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os

from egovlp.errors import InputError
from egovlp.validate import input_dir, positive_float, positive_int, resolve_device
from serve.app import create_app
from serve.state import Settings, load_settings_backend

SETTINGS_ENV = "EGOVLP_SERVE_SETTINGS"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1..65535)")
    return port


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="egovlp serve", description="EgoVLP embedding and search HTTP service.")
    p.add_argument("--model", required=True, help="checkpoint (.pth) or model directory")
    p.add_argument("--index", default=None, help="index folder from `egovlp index`")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument(
        "--workers", type=positive_int, default=1, help="uvicorn worker processes (one model each)"
    )
    p.add_argument("--api-key", default=os.environ.get("EGOVLP_API_KEY"), help="require Bearer KEY")
    p.add_argument(
        "--allowed-root",
        dest="allowed_roots",
        action="append",
        default=[],
        help="folder server paths may use",
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
        help="CUDA autocast (auto: the index's feature precision, else fp16); always fp32 on the CPU",
    )  # fmt: skip
    p.add_argument("--allow-foreign-index", action="store_true", help="serve an index from other weights")
    p.add_argument("--max-batch", type=positive_int, default=32, help="text batch size (video: a quarter)")
    p.add_argument("--max-wait-ms", type=positive_float, default=5.0, help="how long a batch waits to fill")
    p.add_argument(
        "--max-queue", type=positive_int, default=64, help="queued requests per modality before 429"
    )
    p.add_argument("--max-body-mb", type=positive_float, default=64.0, help="request body limit")
    p.add_argument("--max-decodes", type=positive_int, default=4, help="video decode worker processes")
    p.add_argument(
        "--decode-timeout", dest="decode_timeout_s", type=positive_float, default=30.0, help="per decode, s"
    )
    p.add_argument(
        "--keep-alive", type=positive_float, default=30.0, help="seconds an idle connection stays open"
    )
    p.add_argument(
        "--cors-origin", dest="cors_origins", action="append", default=[], help="allow this origin"
    )
    p.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """The flags named after a Settings field carry over as they are; three are converted."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    same = {name: value for name, value in vars(args).items() if name in fields}
    return Settings(
        **same,
        max_batch_text=args.max_batch,
        max_batch_video=max(1, args.max_batch // 4),
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
    )


def load(settings: Settings):
    return load_settings_backend(settings)


def worker_app():
    """uvicorn factory for `--workers N`: each worker process loads its own backend."""
    settings = Settings(**json.loads(os.environ[SETTINGS_ENV]))
    return create_app(settings, backend=load(settings))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not os.path.exists(args.model):
        raise InputError(f"--model {args.model}: no such file or directory")
    if args.index:
        input_dir(args.index, "--index")
    for root in args.allowed_roots:
        input_dir(root, "--allowed-root")
    resolve_device(args.device)
    level = "DEBUG" if args.log_level == "trace" else args.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it picked: noise
    settings = settings_from(args)
    backend = load(settings)  # InputError (one line, exit 2) for a model or index that cannot serve
    import uvicorn

    if args.workers == 1:
        app = create_app(settings, backend=backend)
        uvicorn.run(
            app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=args.keep_alive
        )
        return 0
    del backend  # checked; every worker loads its own
    os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    uvicorn.run(
        "serve.serve_cli:worker_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        timeout_keep_alive=args.keep_alive,
    )
    return 0

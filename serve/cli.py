"""`egovlp serve --model M [--index INDEX_DIR] ...`: validate, load, then start uvicorn.

Every setting is checked and the model and index are loaded before the server starts, so a broken
setup (a random-bytes model, a corrupt index, `--device cuda` without a GPU, `--max-batch 0`,
`--port 99999`, an index from other weights or another precision) is one line and exit 2, never a
"healthy" server. With `--workers N` each uvicorn worker process loads its own copy (after the same
check here). The limit flags are made from `serve.settings.ServiceLimits` (defaults and help); this
module imports the app factory, never the reverse.
"""

from __future__ import annotations

import argparse
import logging
import os
import typing

from egovlp.cli_args import OneLineParser
from egovlp.errors import InputError
from egovlp.precision import PRECISIONS
from egovlp.validate import input_dir, positive_float, positive_int, resolve_device
from serve.app import create_app
from serve.settings import ServiceLimits, Settings
from serve.state import load_settings_backend

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


def _limit_flags() -> list[tuple[str, str, int]]:
    """(field, flag, unit) of every ServiceLimits field: `--field-name` unless the field names its flag."""
    out = []
    for name, info in ServiceLimits.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        out.append((name, str(extra.get("flag") or "--" + name.replace("_", "-")), int(extra.get("unit", 1))))
    return out


def add_limit_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per service limit; its default and help are the ServiceLimits field's."""
    hints = typing.get_type_hints(ServiceLimits)
    group = p.add_argument_group("limits (published by /info)")
    for name, flag, unit in _limit_flags():
        info = ServiceLimits.model_fields[name]
        counts = hints[name] in (int, int | None) and unit == 1
        default = None if info.default is None else info.default / unit
        shown = "" if default is None else f" (default {default:g})"
        group.add_argument(
            flag,
            dest=name,
            type=positive_int if counts else positive_float,
            default=default,
            metavar="N" if counts else ("MIB" if unit != 1 else "X"),
            help=f"{info.description}{shown}",
        )


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="egovlp serve", description="EgoVLP embedding and search HTTP service.")
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
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="weights and compute (egovlp.precision); auto: the index's feature precision when it "
        "records one, else bf16 on CUDA, fp32 on a CPU without a bf16 matrix engine",
    )
    p.add_argument(
        "--allow-foreign-index",
        action="store_true",
        help="serve an index from other weights or another precision",
    )
    p.add_argument(
        "--keep-alive", type=positive_float, default=30.0, help="seconds an idle connection stays open"
    )
    p.add_argument(
        "--cors-origin", dest="cors_origins", action="append", default=[], help="allow this origin"
    )
    p.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS)
    add_limit_arguments(p)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """The flags named after a Settings field carry over; limits given in units (MiB) become bytes."""
    values = {name: value for name, value in vars(args).items() if name in Settings.model_fields}
    for name, _, unit in _limit_flags():
        if unit != 1 and values.get(name) is not None:
            values[name] = int(values[name] * unit)
    return Settings(**values)


def worker_app():
    """uvicorn factory for `--workers N`: each worker process loads its own backend."""
    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    return create_app(settings, backend=load_settings_backend(settings))


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
    backend = load_settings_backend(settings)  # InputError (one line, exit 2) when it cannot serve
    import uvicorn

    if args.workers == 1:
        app = create_app(settings, backend=backend)
        uvicorn.run(
            app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=args.keep_alive
        )
        return 0
    del backend  # checked; every worker loads its own
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    uvicorn.run(
        "serve.cli:worker_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        timeout_keep_alive=args.keep_alive,
    )
    return 0

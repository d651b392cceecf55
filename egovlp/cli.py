"""The `egovlp` console script: a thin dispatcher over every application's `main(argv)`.

This is the one module that knows all applications. Imports are lazy so that `egovlp convert`
does not import FastAPI, and `egovlp serve` does not import the training loop.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

# command -> "module:function"; each function takes argv (the arguments after the command).
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("egovlp.commands:convert_main", "official checkpoint -> safetensors directory"),
    "embed": ("egovlp.commands:embed_main", "embed a text or a video clip, print JSON"),
    "synth": ("egovlp.synth:main", "write the synthetic egocentric dataset"),
    "shard": ("pretrain.shards:main", "EgoClip csv + videos -> webdataset shards"),
    "loader": ("pretrain.loader:main", "one epoch through the training loader (a data check)"),
    "pretrain": ("pretrain.train:main", "EgoNCE pretraining through accelerate"),
    "extract": ("extract.cli:main", "batch features for NLQ / MQ / VQ2D / text"),
    "index": ("serve.index:main", "FAISS index over extracted features"),
    "serve": ("serve.app:main", "the HTTP embedding and search service"),
    "heads": ("heads.cli:main", "train / predict downstream NLQ, MQ, VQ2D heads"),
}

# `egovlp eval TASK`: EgoMCQ belongs to pretraining, the Ego4D metrics to the heads.
EVAL_TASKS: dict[str, str] = {
    "egomcq": "pretrain.egomcq:main",
    "nlq": "heads.metrics.cli:main",
    "mq": "heads.metrics.cli:main",
    "vq2d": "heads.metrics.cli:main",
    "grounding": "heads.metrics.cli:main",
}


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _usage() -> str:
    lines = ["usage: egovlp COMMAND [ARGS]", "", "commands:"]
    for name, (_, help_) in COMMANDS.items():
        lines.append(f"  {name:<10} {help_}")
    lines.append(f"  {'eval':<10} metrics: {' | '.join(EVAL_TASKS)}")
    return "\n".join(lines)


def run(argv: Sequence[str]) -> int:
    from egovlp.errors import InputError

    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "eval":
        if not rest or rest[0] not in EVAL_TASKS:
            print(f"egovlp eval: choose a task: {', '.join(EVAL_TASKS)}", file=sys.stderr)
            return 2
        # the metric CLI receives its task name as the first argument
        target = EVAL_TASKS[rest[0]]
        rest = rest[1:] if rest[0] == "egomcq" else rest
    elif command in COMMANDS:
        target = COMMANDS[command][0]
    else:
        print(f"egovlp: unknown command {command!r}\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return int(_load(target)(rest) or 0)
    except InputError as err:
        print(f"egovlp {command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"egovlp {command}: interrupted", file=sys.stderr)
        return 130


def main() -> None:
    # Idle OpenMP threads sleep instead of spinning: our jobs run decoders beside the model, and
    # spinning threads starve them (several times slower on a 2-core machine). Set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()

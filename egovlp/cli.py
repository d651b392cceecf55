"""The `egovlp` console script: a thin dispatcher over every application's `main(argv)`.

This is the one module that knows all applications. Imports are lazy so that `egovlp convert`
does not import FastAPI, and `egovlp serve` does not import the training loop.
"""

from __future__ import annotations

import errno
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
    "index": ("serve.index.cli:main", "FAISS index over extracted features"),
    "serve": ("serve.cli:main", "the HTTP embedding and search service"),
    "heads": ("heads.cli:main", "train / predict downstream NLQ, MQ, VQ2D heads"),
    "finetune": ("finetune.cli:main", "fine-tune the video tower for OSCC / PNR"),
}

# `egovlp eval TASK`: EgoMCQ belongs to pretraining, the Ego4D metrics to the heads.
EVAL_TASKS: dict[str, str] = {
    "egomcq": "pretrain.egomcq:main",
    "nlq": "egovlp.metrics.cli:main",
    "mq": "egovlp.metrics.cli:main",
    "vq2d": "egovlp.metrics.cli:main",
    "oscc": "egovlp.metrics.cli:main",
    "pnr": "egovlp.metrics.cli:main",
    "grounding": "egovlp.metrics.cli:main",
}


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _usage() -> str:
    lines = ["usage: egovlp COMMAND [ARGS]", "", "commands:"]
    for name, (_, help_) in COMMANDS.items():
        lines.append(f"  {name:<10} {help_}")
    lines.append(f"  {'eval':<10} metrics: {' | '.join(EVAL_TASKS)}")
    return "\n".join(lines)


def _close_progress_bars() -> None:
    # a bar left open by the failing command would have the error line glued to its end
    tqdm_std = sys.modules.get("tqdm.std")
    if tqdm_std is not None:
        for bar in list(getattr(tqdm_std.tqdm, "_instances", ())):
            try:
                bar.close()
            except Exception:  # a bar in a broken state must not hide the error itself
                pass


def _quiet_broken_pipe() -> int:
    # the reader (`egovlp embed | head`) went away: point stdout at /dev/null so the flush at exit
    # cannot raise again, and leave with the shell's code for a SIGPIPE death
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13


def run(argv: Sequence[str]) -> int:
    from egovlp.errors import InputError, TrainingDiverged
    from egovlp.validate import is_write_error, os_error_reason, write_error

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
        command = f"eval {rest[0]}"  # named in error lines
        rest = rest[1:] if rest[0] == "egomcq" else rest
    elif command in COMMANDS:
        target = COMMANDS[command][0]
    else:
        print(f"egovlp: unknown command {command!r}\n{_usage()}", file=sys.stderr)
        return 2
    try:
        code = int(_load(target)(rest) or 0)
        sys.stdout.flush()
        return code
    except InputError as err:
        _close_progress_bars()
        # one line whatever the message holds (a library's multi-line text quoted inside it)
        print(f"egovlp {command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:  # a run that stopped itself, not a bad input: exit 1
        _close_progress_bars()
        print(f"egovlp {command}: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except OSError as err:
        # a full disk, a read-only or forbidden output: one line naming the path, not a traceback
        if not (is_write_error(err) and (err.filename or err.errno in _DISK_ERRNOS)):
            raise
        _close_progress_bars()
        if err.errno in _DISK_ERRNOS:
            message = str(write_error(err.filename, err))
        else:
            message = f"{err.filename}: {os_error_reason(err)}"
        print(f"egovlp {command}: error: {message}", file=sys.stderr)
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

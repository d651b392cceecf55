"""Test helpers: run `egovlp` in-process without leaking state, and build the shared artifacts once.

`run_egovlp(argv)` calls `egovlp.cli.run` the way `python -m egovlp` would, with stdout and stderr
captured at the file-descriptor level (so C libraries and logging handlers bound early are caught
too), and puts back what a command may change in its process: environment, cwd, CPU affinity, torch
threads and RNG, logging, warnings filters, signal handlers, argparse's `error`, accelerate's state.

The builders (`micro_model_files`, `synthetic_world`, `world_shards`, `extracted_features`) make
each artifact once per test process, in one private folder removed at exit; every test module that
asks gets the same paths. They are read-only inputs: a test that writes writes elsewhere.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = (
    str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
)

# Python's own filters at start-up (no -W, no PYTHONWARNINGS): what a user of `python -m egovlp` sees
_STARTUP_WARNING_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)
_SIGNALS = (
    *(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2),
    *(signal.SIGPIPE, signal.SIGCHLD, signal.SIGALRM),
)
# one in-process run at a time: the captured descriptors and sys.std* are process-wide
_RUN_LOCK = threading.Lock()


@dataclass(frozen=True)
class CliRun:
    code: int | None  # None: it did not end (a subprocess killed at its timeout)
    stdout: str
    stderr: str


# --------------------------------------------------------------------------------------------
# in-process runs


def run_egovlp(argv: Sequence[str]) -> CliRun:
    """`egovlp ARGV` in this process: exit code (SystemExit included) and the captured output."""
    from egovlp.cli import run

    with _RUN_LOCK, _restored_process_state(), _captured_stdio() as captured:
        try:
            code: int | None = run(list(argv))
        except SystemExit as exit_:  # argparse and `sys.exit` inside a command
            if exit_.code is None or isinstance(exit_.code, int):
                code = exit_.code or 0
            else:  # sys.exit("message"): Python prints it and exits 1
                print(exit_.code, file=sys.stderr)
                code = 1
    return CliRun(code, captured["stdout"], captured["stderr"])


@contextlib.contextmanager
def _captured_stdio() -> Iterator[dict[str, str]]:
    """fds 1 and 2 (and sys.stdout / sys.stderr over them) into temp files; their text is yielded."""
    captured: dict[str, str] = {}
    sys.stdout.flush()
    sys.stderr.flush()
    saved_streams = sys.stdout, sys.stderr
    saved_fds = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    try:
        for fd, file in files.items():
            os.dup2(file.fileno(), fd)
        # like the interpreter's own: stderr line-buffered with backslashreplace
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115
        try:
            yield captured
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):  # a stream the command closed
                    stream.flush()
    finally:
        sys.stdout, sys.stderr = saved_streams
        for fd, saved in saved_fds.items():
            os.dup2(saved, fd)
            os.close(saved)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            files[fd].seek(0)
            captured[name] = files[fd].read().decode("utf-8", errors="replace")
            files[fd].close()


@contextlib.contextmanager
def _restored_process_state() -> Iterator[None]:
    """Snapshot what a command may change in its process; put it back afterwards."""
    import argparse

    import numpy as np
    import torch

    environ = dict(os.environ)
    cwd = os.getcwd()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = torch.get_num_threads()
    torch_rng, numpy_rng, python_rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    default_dtype, grad_enabled = torch.get_default_dtype(), torch.is_grad_enabled()
    matmul_precision = torch.get_float32_matmul_precision()
    handlers = {s: signal.getsignal(s) for s in _SIGNALS}
    argparse_error = argparse.ArgumentParser.__dict__["error"]
    loggers = _logging_state()
    with warnings.catch_warnings():
        # a fresh process's filters, shown on (captured) stderr, not pytest's record of them
        warnings.resetwarnings()
        for action, category, module in reversed(_STARTUP_WARNING_FILTERS):
            warnings.filterwarnings(action, category=category, module=module)
        warnings.showwarning = _show_warning_on_stderr
        root = logging.getLogger()
        root.handlers = []  # pytest's capture handlers would turn `logging.basicConfig` into a no-op
        root.setLevel(logging.WARNING)
        try:
            yield
        finally:
            argparse.ArgumentParser.error = argparse_error  # type: ignore[method-assign]
            for s, handler in handlers.items():
                if handler is not None:
                    signal.signal(s, handler)
            _restore_logging(loggers)
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(environ)
            if affinity is not None:
                os.sched_setaffinity(0, affinity)
            torch.set_num_threads(threads)
            torch.set_rng_state(torch_rng)
            np.random.set_state(numpy_rng)
            random.setstate(python_rng)
            torch.set_default_dtype(default_dtype)
            torch.set_grad_enabled(grad_enabled)
            torch.set_float32_matmul_precision(matmul_precision)
            _reset_accelerate()


def _show_warning_on_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _logging_state() -> dict[str, tuple]:
    manager = logging.Logger.manager
    state = {"": (logging.getLogger().level, list(logging.getLogger().handlers), False, False)}
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            state[name] = (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
    state[" disable"] = (manager.disable,)
    return state


def _restore_logging(state: dict[str, tuple]) -> None:
    logging.disable(state.pop(" disable")[0])
    for name, (level, handlers, propagate, disabled) in state.items():
        logger = logging.getLogger(name or None)
        for handler in logger.handlers:
            if handler not in handlers:  # added by the command (basicConfig): bound to a closed stream
                logger.removeHandler(handler)
                with contextlib.suppress(Exception):
                    handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        if name:
            logger.propagate, logger.disabled = propagate, disabled
    # a logger first made during the run (a library imported then) keeps what the library gave it


def _reset_accelerate() -> None:
    # accelerate keeps one process-wide state; a pretrain run made it, the next would reuse it
    state = sys.modules.get("accelerate.state")
    if state is not None:
        with contextlib.suppress(Exception):
            state.AcceleratorState._reset_state(reset_partial_state=True)


# --------------------------------------------------------------------------------------------
# subprocess runs


def subprocess_env() -> dict[str, str]:
    """CUDA hidden (`--device cuda` is the "no GPU" case on any machine), one OpenMP thread."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def run_egovlp_subprocess(argv: Sequence[str], timeout: float) -> CliRun:
    """`python -m egovlp ARGV` in its own session; killed with its children at `timeout` (code None)."""
    proc = subprocess.Popen(
        [PY, "-m", "egovlp", *argv],
        cwd=ROOT,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: a timeout takes its children with it
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return CliRun(
            None, out, f"still running after {timeout:.0f} s (it accepted the input)\n{err[-1500:]}"
        )
    return CliRun(proc.returncode, out, err)


# --------------------------------------------------------------------------------------------
# shared artifacts, built once per test process


@functools.cache
def session_dir() -> Path:
    """A private folder for this test process (not pytest's numbered tmp: concurrent sessions
    rotate those away), removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="egovlp-tests-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def micro_model_files() -> dict[str, Path]:
    """The seed-0 micro model: `model` (save_pretrained folder), `pth` (an official-style
    checkpoint of the same weights) and `micro_yaml` (its config for `egovlp convert --config`)."""
    import torch
    import yaml

    from egovlp.model import EgoVLP
    from tests.conftest import micro_config
    from tests.test_checkpoint import write_official_checkpoint

    out = session_dir() / "micro"
    out.mkdir()
    with _torch_rng_kept():
        torch.manual_seed(0)
        model = EgoVLP(micro_config())
    model.save_pretrained(out / "model")
    write_official_checkpoint(model, out / "official.pth")
    cfg = micro_config().to_dict()
    cfg.pop("name")
    (out / "micro.yaml").write_text(yaml.safe_dump(cfg))
    return {"model": out / "model", "pth": out / "official.pth", "micro_yaml": out / "micro.yaml"}


@functools.cache
def synthetic_world() -> Path:
    """`egovlp synth` output: 4 videos (short side 48, 12 s), seed 0."""
    from egovlp.synth.cli import synthesize

    world = session_dir() / "world"
    synthesize(world, videos=4, seed=0, short_side=48, duration=12.0, workers=1)
    return world


@functools.cache
def world_shards() -> Path:
    """The world's EgoClip rows as webdataset shards (4 frames of 32 px)."""
    from pretrain.shards import run_shards

    world, shards = synthetic_world(), session_dir() / "shards"
    run_shards(world / "egoclip.csv", world / "videos", shards, frames=4, size=32, workers=0, progress=False)
    return shards


@functools.cache
def extracted_features() -> dict[str, Path]:
    """`features` (preset nlq over the world's videos) and `text_features` (preset text over its
    NLQ queries) from the micro model, extracted side by side as subprocesses: the decode workers
    fork, and a forked test process is not something to depend on."""
    model, world = micro_model_files()["model"], synthetic_world()
    out = {"features": session_dir() / "features", "text_features": session_dir() / "text-features"}
    common = ["--model", str(model), "--no-progress", "--no-pin-cpus", "--device", "cpu", "--workers", "1"]
    inputs = {"features": ("nlq", world / "videos"), "text_features": ("text", world / "nlq_train.json")}
    jobs = {
        name: subprocess.Popen(
            [
                PY,
                "-m",
                "egovlp",
                "extract",
                "--preset",
                preset,
                "--input",
                str(source),
                "--out",
                str(out[name]),
            ]
            + common,
            cwd=ROOT,
            env=subprocess_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (preset, source) in inputs.items()
    }
    for name, job in jobs.items():
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, f"extracting {name} failed:\n{err[-2000:]}"
    return out


@contextlib.contextmanager
def _torch_rng_kept() -> Iterator[None]:
    # built on first use, whichever test asks first: it must not move that test's random stream
    import torch

    state = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_rng_state(state)


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


__all__ = [
    "ROOT",
    "PY",
    "CliRun",
    "run_egovlp",
    "run_egovlp_subprocess",
    "subprocess_env",
    "session_dir",
    "micro_model_files",
    "synthetic_world",
    "world_shards",
    "extracted_features",
    "write_json",
]

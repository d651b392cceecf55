"""Setting up a training process: its precision and accelerate, the run folder, the optimizer with a
resumed state, the final summary, and the torchrun relaunch behind `--num-processes`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from egovlp.errors import InputError, TrainingDiverged
from egovlp.io import remove_stale_temps, write_json_atomic
from egovlp.precision import PRECISIONS, Precision, resolve_precision
from egovlp.training.checkpoints import CHECKPOINTS, resume_checkpoint
from egovlp.training.optim import cosine_with_warmup, create_optimizer

log = logging.getLogger(__name__)

# the `precision` key of every training config: egovlp.precision's vocabulary, typed for pydantic
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
assert get_args(PrecisionName) == PRECISIONS


def training_precision(requested: str | None, flag: str = "--precision") -> Precision:
    """The precision a trainer runs: `requested` (auto|fp32|bf16|fp16) on the device accelerate picks
    (the GPU when there is one). bf16 on the CPU is autocast over fp32 master weights."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_precision(requested, device, flag)


def create_accelerator(precision: Precision, grad_accum: int = 1, data_workers: int = 0):
    """An Accelerator for this process (CPU or its GPU) computing in `precision`.

    accelerate autocasts the prepared model's forward (and scales fp16 losses); its process state is
    one per process, so a second run in the same single process (tests, notebooks) with another
    precision resets it first. On the CPU the torch threads share the cores with the data workers:
    `cores / processes - workers` (oversubscribed OpenMP threads stall each other).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cpu = precision.device_type != "cuda"
    options = {
        "mixed_precision": precision.accelerate_name,
        "gradient_accumulation_steps": grad_accum,
        "cpu": cpu,
    }
    try:
        accelerator = Accelerator(**options)
    except ValueError:
        if launched():
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = Accelerator(**options)
    if cpu:
        cores = max(1, (os.cpu_count() or 1) // accelerator.num_processes)
        torch.set_num_threads(max(1, cores - data_workers))
    return accelerator


def prepare_output_dir(output_dir: str | os.PathLike, accelerator, config: dict[str, Any]) -> Path:
    """Create the run folder, remove killed runs' temp files, save the resolved options as config.json."""
    out = Path(output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
        remove_stale_temps(out / CHECKPOINTS)
        write_json_atomic(config, out / "config.json", indent=2)
    accelerator.wait_for_everyone()
    return out


def prepare_optimization(
    accelerator,
    model,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    output_dir: Path,
    resume: str | None,
) -> tuple[Any, torch.optim.Optimizer, Any, int]:
    """AdamW and the warm-up cosine schedule, the model and optimizer prepared by accelerate, and the
    state of `resume` loaded into them; returns (model, optimizer, scheduler, step). The schedule is
    stepped by the app once per optimizer step, so it does not depend on the process count."""
    optimizer = create_optimizer(model, lr, weight_decay)
    scheduler = cosine_with_warmup(optimizer, warmup_steps, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    step = 0
    if resume:
        _, state = resume_checkpoint(output_dir, resume, model, optimizer, scheduler, accelerator)
        step = state["step"]
    return model, optimizer, scheduler, step


def run_and_report(command: str, run: Callable[[], dict], summary_path: str | None) -> int:
    """A training CLI's last step: log to stderr, run, exit 1 on a diverged loss, write the summary."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        summary = run()
    except TrainingDiverged as err:
        print(f"{command}: {err}", file=sys.stderr)
        return 1
    if summary_path and is_main_rank():
        write_json_atomic(summary, summary_path, indent=2)
    return 0


# --- several processes on one machine --------------------------------------------------------------


def launched() -> bool:
    """True inside a torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def check_num_processes(n: int) -> int:
    if n < 1:
        raise InputError(f"--num-processes {n}: must be at least 1")
    return n


def relaunch(module: str, args: Sequence[str], num_processes: int) -> int:
    """Run `python -m module ARGS` as `num_processes` processes under torchrun; its exit code.

    Gloo on the CPU, NCCL on GPUs; each process sees RANK / WORLD_SIZE and accelerate picks them up.
    """
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={num_processes}",
        "-m",
        module,
        *args,
    ]
    return subprocess.call(cmd)

"""What the training applications (`pretrain/`, `finetune/`) share: accelerate setup, precision policy,
optimizer and schedule, checkpoints with resume, the non-finite-loss stop, `metrics.jsonl`, the
progress bar, and the torchrun relaunch behind `--num-processes`.

Checkpoints: `OUT/checkpoints/step_XXXXXXXX/` holds accelerate's state (model, optimizer, registered
schedulers, every process's RNG), the app's model folder and `trainer_state.json`. A checkpoint is
written under a temporary name and renamed when complete; `OUT/checkpoints/latest` names the newest
and is replaced last, so a run killed at any moment leaves the previous checkpoint intact.

`metrics.jsonl` holds one JSON row per logged step. A fresh run starts a new file; a resumed run
keeps the rows up to its checkpoint's step and drops the rest (a killed run may have logged past
it), so after any number of resumes every step appears once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from egovlp.errors import InputError, TrainingDiverged
from egovlp.io import atomic_write, remove_stale_temps, write_json_atomic

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
METRICS = "metrics.jsonl"


# --- setup ---------------------------------------------------------------------------------------


def resolve_precision(requested: str, flag: str = "mixed_precision") -> str:
    """ "auto" -> bf16 on CUDA, "no" (fp32) on the CPU; bf16/fp16 on the CPU are refused (far slower)."""
    cuda = torch.cuda.is_available()
    precision = requested if requested != "auto" else ("bf16" if cuda else "no")
    if precision not in ("no", "bf16", "fp16"):
        raise InputError(f"{flag}={requested}: expected auto, no, bf16 or fp16")
    if not cuda and precision != "no":
        raise InputError(f"{flag}={precision}: use 'no' on the CPU (bf16 matmul is far slower there)")
    return precision


def create_accelerator(mixed_precision: str = "auto", grad_accum: int = 1, data_workers: int = 0):
    """An Accelerator for this process (CPU or its GPU) with the precision policy applied.

    On the CPU the torch threads share the cores with the data workers: `cores / processes - workers`
    (oversubscribed OpenMP threads stall each other).
    """
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    accelerator = Accelerator(
        mixed_precision=resolve_precision(mixed_precision),
        gradient_accumulation_steps=grad_accum,
        cpu=not cuda,
    )
    if not cuda:
        cores = max(1, (os.cpu_count() or 1) // accelerator.num_processes)
        torch.set_num_threads(max(1, cores - data_workers))
    return accelerator


def autocast(accelerator) -> AbstractContextManager:
    """accelerate's autocast on CUDA; nothing on the CPU (fp32 there)."""
    return accelerator.autocast() if accelerator.device.type == "cuda" else nullcontext()


def create_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; biases, norms, embeddings and tokens are not decayed."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embed" in name or "token" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warmup to the base lr over `warmup` steps, then cosine decay to 0 at `total`."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)


# --- the starting point ----------------------------------------------------------------------------


def read_vit_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A timm-named image ViT state dict from a .safetensors or torch file (never unpickles objects)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ViT state dict not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input
        raise InputError(f"{path}: not a readable ViT state dict ({str(err).splitlines()[0]})") from None
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"{path}: expected a state dict of tensors")
    return state


def create_model_from_init(init: str, config):
    """The EgoVLP model a run starts from.

    `init`: "" or "random" (random weights of `config`), "vit:PATH" (the video tower from a timm
    image ViT, B.1; the rest random), or an EgoVLP checkpoint (.pth) / converted folder.
    `config`: a model YAML path or a ModelConfig (None: the checkpoint's own, or the base model).
    """
    import egovlp
    from egovlp.config import ModelConfig, base_config, load_config
    from egovlp.model import EgoVLP
    from egovlp.video_tower import video_tower_state_from_vit

    if init in ("", "random") or init.startswith("vit:"):
        cfg = config if isinstance(config, ModelConfig) else load_config(config) if config else base_config()
        model = EgoVLP(cfg)
        if init.startswith("vit:"):
            try:
                state = video_tower_state_from_vit(read_vit_state(init[4:]), model.video_model)
            except ValueError as err:
                raise InputError(f"{init[4:]}: does not fit the video tower ({err})") from None
            model.video_model.load_state_dict(state)
        return model
    return egovlp.load_model(init, config=config)


# --- checkpoints ---------------------------------------------------------------------------------


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint `OUT/checkpoints/latest` names, if it is complete."""
    root = Path(output_dir) / CHECKPOINTS
    pointer = root / "latest"
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / TRAINER_STATE).is_file():
            return path
    return None


def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    step: int,
    state: dict[str, Any],
    keep: int,
    save_model: Callable[[Path], None] | None = None,
) -> Path:
    """Write `checkpoints/step_{step}` (every process takes part); keep the newest `keep`.

    `save_model(folder)` (main process) writes the app's loadable model into `folder/model`.
    """
    root = Path(output_dir) / CHECKPOINTS
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp_step_*"):  # a killed save's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # model, optimizer, registered schedulers, every process's RNG
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if save_model is not None:
            save_model(tmp / "model")
        write_json_atomic({"step": step, **state}, tmp / TRAINER_STATE, indent=2)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        with atomic_write(root / "latest") as f:
            f.write(final.name + "\n")
        for old in sorted(root.glob("step_*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resume_checkpoint(accelerator, output_dir: str | os.PathLike, resume: str) -> tuple[Path, dict]:
    """Load `resume` ("latest" or a checkpoint folder) into the prepared objects; (path, trainer state)."""
    path = latest_checkpoint(output_dir) if resume == "latest" else Path(resume)
    if path is None or not (path / TRAINER_STATE).is_file():
        where = output_dir if resume == "latest" else resume
        raise InputError(f"--resume: no checkpoint found ({where})")
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
        step = int(state["step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path / TRAINER_STATE}: unreadable trainer state ({err})") from None
    accelerator.load_state(str(path))
    log.info("resumed from %s at step %d", path, step)
    return path, {**state, "step": step}


def check_finite(loss: torch.Tensor, step: int, last_good: Path | None) -> None:
    """Raise TrainingDiverged when `loss` is NaN or infinite (before it reaches the weights)."""
    if not torch.isfinite(loss.detach()).all():
        where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint written yet"
        raise TrainingDiverged(f"non-finite loss ({loss.item()}) at step {step}; stopping ({where})")


# --- metrics and progress --------------------------------------------------------------------------


class MetricsLog:
    """`metrics.jsonl` (+ TensorBoard when installed): one row per logged step, no duplicates.

    `start_step` 0 starts a new file; a resumed run keeps the old rows with step <= start_step.
    Disabled (does nothing) on processes other than the main one.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        start_step: int = 0,
        enabled: bool = True,
        tensorboard: bool = True,
    ) -> None:
        self.path = Path(output_dir) / METRICS
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        keep = _rows_up_to(self.path, start_step) if start_step > 0 else []
        with atomic_write(self.path) as f:
            f.writelines(json.dumps(row) + "\n" for row in keep)
        self._file = open(self.path, "a")  # noqa: SIM115 - held for the run, closed by close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=start_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self.writer is not None:
                self.writer.close()


def _rows_up_to(path: Path, step: int) -> list[dict]:
    """Rows of an old metrics file with step <= `step`; a torn last line (a killed run) is dropped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            rows.append(row)
    return rows


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr with rate and ETA (the remaining steps at the recent pace)."""
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, disable=not enabled, file=sys.stderr, desc=desc, dynamic_ncols=True
    )


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


# --- several processes on one machine --------------------------------------------------------------


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
    """AdamW and the warm-up cosine schedule, prepared by accelerate, the schedule registered for
    checkpoints, and the state of `resume` loaded; returns (model, optimizer, scheduler, step)."""
    optimizer = create_optimizer(model, lr, weight_decay)
    scheduler = cosine_with_warmup(optimizer, warmup_steps, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    # stepped by the app once per optimizer step, so the schedule does not depend on the process count
    accelerator.register_for_checkpointing(scheduler)
    step = 0
    if resume:
        _, state = resume_checkpoint(accelerator, output_dir, resume)
        step = state["step"]
    return model, optimizer, scheduler, step

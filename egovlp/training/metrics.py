"""What a run reports while it trains: `metrics.jsonl`, the progress bar and the non-finite-loss stop.

`metrics.jsonl` holds one JSON row per logged step. A fresh run starts a new file; a resumed run keeps
the rows up to its checkpoint's step and drops the rest (a killed run may have logged past it), so
after any number of resumes every step appears once.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from egovlp.errors import TrainingDiverged
from egovlp.io import atomic_write

METRICS = "metrics.jsonl"


def check_finite(loss: torch.Tensor, step: int, last_good: Path | None) -> None:
    """Raise TrainingDiverged when `loss` is NaN or infinite (before it reaches the weights)."""
    if not torch.isfinite(loss.detach()).all():
        where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint written yet"
        raise TrainingDiverged(f"non-finite loss ({loss.item()}) at step {step}; stopping ({where})")


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

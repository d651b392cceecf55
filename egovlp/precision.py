"""The one precision policy: a device and a requested precision -> the dtype that runs and its autocast.

Vocabulary (every command's `--precision` and every config's `precision` key):

- `fp32`: float32 throughout;
- `bf16`: bfloat16 compute (autocast, or weights cast once for inference);
- `fp16`: float16 compute, CUDA only;
- `auto`: bf16 on CUDA and on CPUs with a bf16 matrix engine (AMX-BF16 or AVX512-BF16, as torch's
  CPU capability probes report it), fp32 on any other CPU.

`resolve_precision` is the only place that decides; callers keep the returned `Precision` and ask it
for its dtype, its autocast context or the name accelerate uses (`no`, `bf16`, `fp16`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from egovlp.errors import InputError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = (
    "auto (bf16 on CUDA and on CPUs with a bf16 matrix engine, else fp32) | fp32 | bf16 | fp16 (CUDA only)"
)

# `EGOVLP_CPU_BF16=0|1` overrides the CPU probe: 0 keeps `auto` at fp32 on any CPU (the test suite
# sets it, so its fp32 references hold on every machine), 1 claims a bf16 engine.
CPU_BF16_ENV = "EGOVLP_CPU_BF16"


def add_precision_argument(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """`--precision`, as every command that runs a model takes it (the one flag definition)."""
    parser.add_argument("--precision", default=default, choices=PRECISIONS, help=PRECISION_HELP)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16_matmul() -> bool:
    """True when this CPU multiplies bf16 matrices natively (AMX tiles or AVX512-BF16 instructions).

    Without either, torch emulates bf16 on the CPU and it runs slower than fp32."""
    import torch

    override = os.environ.get(CPU_BF16_ENV, "").strip()
    if override in ("0", "1"):
        return override == "1"

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if probe is not None and probe():
            return True
    return False


@dataclass(frozen=True)
class Precision:
    """What runs: `name` in fp32 / bf16 / fp16, on a device of `device_type` ("cpu", "cuda", ...)."""

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    @property
    def is_reduced(self) -> bool:
        return self.name != "fp32"

    @property
    def accelerate_name(self) -> str:
        """accelerate's `mixed_precision` value for this precision."""
        return "no" if self.name == "fp32" else self.name

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to this precision on its device; nothing for fp32."""
        import torch

        if not self.is_reduced:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def resolve_precision(
    requested: str | None, device: torch.device | str = "cpu", flag: str = "--precision"
) -> Precision:
    """`requested` (one of PRECISIONS; None means auto) on `device` -> the Precision that runs.

    fp16 on a CPU is refused: the CPU matrix engines here compute bf16, and fp16 there is emulated.
    """
    import torch

    device_type = torch.device(device).type
    name = "auto" if requested is None else str(requested)
    if name not in PRECISIONS:
        raise InputError(f"{flag} {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        if device_type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device_type == "cpu":
            name = "bf16" if cpu_has_bf16_matmul() else "fp32"
        else:
            name = "fp32"
    if name == "fp16" and device_type != "cuda":
        raise InputError(f"{flag} fp16: float16 is for CUDA only; use bf16 or fp32 on the {device_type}")
    return Precision(name, device_type)

"""What one extraction run is asked to do (`ExtractOptions`) and what it reports (`ExtractResult`).

The bottom of extract/'s layers with the reader: every layer above reads these, none of them is
imported back (docs/architecture.md, extract paragraph).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from extract.manifest import ManifestRow

VIDEO_PRESETS = ("nlq", "mq", "vq2d")


@dataclass
class ExtractOptions:
    preset: str  # nlq | mq | vq2d
    out: Path
    fmt: str = "pt"  # pt | npy (nlq / mq)
    compat: bool = False
    save_768: bool = False
    batch_size: int = 32
    workers: int = 1  # decoding processes (local) or concurrent decode tasks (ray)
    short_side: int | None = None
    chunk_rows: int = 64
    pin_cpus: bool = True  # local engine, CPU model: decoders and the model on separate cores
    model_name: str = "egovlp"
    progress: bool = True
    engine: str = "local"  # a key of extract.pipeline.ENGINES
    ray_address: str | None = None
    replicas: int | None = None  # ray: model actors (default: the cluster's GPUs, or 1 on CPUs)
    # a folder holds one precision (docs/design.md D); True lets this run add another
    allow_mixed_precision: bool = False

    @property
    def decode_chunk_rows(self) -> int:
        """Rows per decoded chunk: whole batches, so batch boundaries depend on the output alone."""
        return max(1, self.chunk_rows // self.batch_size) * self.batch_size


@dataclass
class StageTimes:
    """Seconds an engine spent per stage: the model (in this process or in the replicas) and the
    decoders (summed over workers, so above the wall time when several run at once)."""

    model: float = 0.0
    decode: float = 0.0


@dataclass
class ExtractResult:
    rows: list[ManifestRow]
    model_seconds: float = 0.0  # time inside the model (local engine; the actors' time under ray)
    wall_seconds: float = 0.0
    video_seconds: float = 0.0  # video computed in this run
    decode_seconds: float = 0.0  # time the decoders spent on the chunks (summed over workers)
    precision: str = "fp32"  # what the model ran in (egovlp.precision name)

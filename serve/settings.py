"""What the service is configured with: `ServiceLimits` (every bound a request meets) and `Settings`.

`ServiceLimits` is the one definition of the limits: each field's default and description are the
`egovlp serve` flag's default and help (serve.cli builds the flags from the fields), and
`limits()` is what `/info` publishes and what the OpenAPI document is tightened with.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from egovlp.precision import PRECISIONS

__all__ = ["ServiceLimits", "Settings"]

MIB = 1024 * 1024


def _limit(default: float | None, about: str, flag: str | None = None, unit: int = 1) -> Any:
    """A limit > 0. `flag` names its `egovlp serve` flag when that is not `--field-name`; `unit`:
    the flag is given in units of that many (bytes as MiB)."""
    extra = {k: v for k, v in (("flag", flag), ("unit", unit if unit != 1 else None)) if v is not None}
    return Field(default, gt=0, description=about, json_schema_extra=extra or None)


class ServiceLimits(BaseModel):
    """Every bound the service enforces; requests beyond one get 413 or 429, never a slow death."""

    model_config = ConfigDict(extra="forbid")

    max_batch_text: int = _limit(32, "texts per model batch", flag="--max-batch")
    max_batch_video: int | None = _limit(
        None, "video clips per model batch (default: a quarter of --max-batch)"
    )
    max_wait_ms: float = _limit(5.0, "milliseconds a batch waits to fill")
    max_queue: int = _limit(64, "queued requests per modality before 429")
    max_queue_items: int = _limit(1024, "queued inputs per modality before 429")
    max_inputs: int = _limit(256, "inputs in one request")
    max_text_chars: int = _limit(20_000, "characters in one text")
    max_body_bytes: int = _limit(64 * MIB, "request body limit in MiB", flag="--max-body-mb", unit=MIB)
    max_video_seconds: float = _limit(600.0, "seconds of video in one request")
    max_windows: int = _limit(64, "clip windows in one video request")
    decode_timeout_s: float = _limit(30.0, "seconds one video decode may take", flag="--decode-timeout")
    max_decodes: int = _limit(4, "video decode worker processes")
    max_decode_waiting: int = _limit(8, "decodes waiting for a worker before 429")
    max_decode_bytes: int = _limit(
        256 * MIB, "MiB of video being decoded or waiting before 429", flag="--max-decode-mb", unit=MIB
    )

    @model_validator(mode="after")
    def _video_batch_follows_text(self) -> ServiceLimits:
        # a clip costs the model about four texts' worth of compute: keep the batches' cost alike
        if self.max_batch_video is None:
            self.max_batch_video = max(1, self.max_batch_text // 4)
        return self

    def limits(self) -> dict[str, Any]:
        """The limits by name, as /info publishes them."""
        return {name: getattr(self, name) for name in ServiceLimits.model_fields}


class Settings(ServiceLimits):
    """The limits plus what to serve and who may call it."""

    model: str | None = None
    index: str | None = None
    api_key: str | None = None
    allowed_roots: list[str] = Field(default_factory=list)
    device: str | None = None
    precision: Literal[PRECISIONS] = "auto"  # resolved by egovlp.precision when the model loads
    allow_foreign_index: bool = False
    cors_origins: list[str] = Field(default_factory=list)

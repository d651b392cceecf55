"""What one output is: its sidecar, its sink, whether an earlier run completed it, and the precision
of the features already in the output folder.

Every sidecar records the precision the model ran in (`precision`: fp32 | bf16 | fp16). An output
counts as done only for a run of the same weights, sampling, source and precision. A folder holds one
precision, as an index holds one set of weights (docs/design.md D): `check_folder_precision` refuses a
run whose precision differs from the features already there unless `--allow-mixed-precision` is
given; with it, this run's outputs are (re)computed in its precision and the others stay as they are.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from egovlp.errors import InputError
from egovlp.features import (
    ModelIdentity,
    clip_complete,
    feature_paths,
    h5_complete,
    h5_meta,
    model_identity,
)
from egovlp.timebase import GRID_FPS, VQ_FPS, WINDOW_FRAMES
from extract.options import ExtractOptions
from extract.reader import Job, letterbox_geometry
from extract.writer import FeatureSink, H5Sink

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputSpec:
    """What the writer needs to know about the model: sizes, identity and the precision it runs in."""

    identity: ModelIdentity
    dim: int  # projection dim (256)
    embed_dim: int  # video tower width (768)
    img_size: int
    patch_size: int
    precision: str  # fp32 | bf16 | fp16

    @classmethod
    def of(cls, model, name: str, precision: str) -> OutputSpec:
        video = model.cfg.video
        return cls(
            model_identity(model, name),
            model.cfg.projection_dim,
            video.embed_dim,
            video.img_size,
            video.patch_size,
            precision,
        )


def output_meta(job: Job, opts: ExtractOptions, spec: OutputSpec) -> dict:
    """The sidecar of one output (docs/design.md B.6): source, identity, precision, sampling, rows."""
    item, plan = job.item, job.plan
    meta = {
        "name": item.name,
        "clip_uid": item.clip_uid,
        "video_uid": item.video_uid,
        "source": item.source,
        "video_start_sec": round(job.start, 6),
        "video_end_sec": round(job.start + job.duration, 6),
        "source_fps": job.info.fps,
        **spec.identity.as_meta(),
        "precision": spec.precision,
        "preset": opts.preset,
        "compat": opts.compat,
        "short_side": opts.short_side,
        "num_rows": plan.num_rows,
    }
    if opts.preset == "vq2d":
        return meta | {"fps": VQ_FPS}
    return meta | {
        "fps": GRID_FPS,
        "window_frames": WINDOW_FRAMES,
        "rows_per_second": plan.rows_per_second,
        "frames_per_row": int(plan.indices.shape[1]),
        "dim": spec.dim,
        "dim_768": spec.embed_dim if opts.save_768 else None,
        "format": opts.fmt,
        "row_times": plan.row_times.tolist(),
        "frame_indices": plan.indices.tolist(),
    }


def make_sink(job: Job, opts: ExtractOptions, spec: OutputSpec) -> FeatureSink | H5Sink:
    meta = output_meta(job, opts, spec)
    rows = job.plan.num_rows
    if opts.preset == "vq2d":
        side = spec.img_size // spec.patch_size
        geometry = letterbox_geometry(job.info.width, job.info.height, spec.img_size)
        attrs = meta | geometry | {"patch_size": spec.patch_size, "dim": spec.embed_dim}
        return H5Sink(
            opts.out / f"{job.item.name}.h5",
            rows,
            (side, side, spec.embed_dim),
            job.plan.frame_numbers,
            job.plan.indices[:, 0],
            attrs,
        )
    paths = feature_paths(opts.out, job.item.name, opts.fmt, opts.save_768)
    return FeatureSink(paths, rows, spec.dim, spec.embed_dim if opts.save_768 else None, meta)


def is_complete(job: Job, opts: ExtractOptions, spec: OutputSpec, precision: str | None) -> bool:
    """Done by an earlier run with the same weights, sampling and source (egovlp.features) and the
    same precision (`precision`: what the output's sidecar records, None when nothing does)."""
    if precision != spec.precision:
        return False
    meta = output_meta(job, opts, spec)
    if opts.preset == "vq2d":
        return h5_complete(opts.out / f"{job.item.name}.h5", job.plan.num_rows, meta)
    paths = feature_paths(opts.out, job.item.name, opts.fmt, opts.save_768)
    dim_768 = spec.embed_dim if opts.save_768 else None
    return clip_complete(paths, job.plan.num_rows, spec.dim, dim_768, meta)


# ---- the folder's precision -----------------------------------------------------------------------


def _sidecar_precision(path: Path) -> tuple[bool, str | None]:
    """(is an extract sidecar, its precision) for one `.json` or `.h5` file of an output folder."""
    if path.suffix == ".h5":
        try:
            meta = h5_meta(path)
        except InputError:
            return False, None  # a truncated or foreign file: not a finished output
    else:
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False, None
    if not isinstance(meta, dict) or "weights_hash" not in meta:
        return False, None  # not written by egovlp extract
    precision = meta.get("precision")
    return True, precision if isinstance(precision, str) else None


def recorded_precisions(out: Path) -> dict[str, str | None]:
    """Output name (file stem) -> the precision its sidecar records (None: a sidecar written before
    precisions were recorded), for every NLQ / MQ / text sidecar and VQ2D grid file in `out`."""
    found: dict[str, str | None] = {}
    if not out.is_dir():
        return found
    for path in sorted(out.iterdir()):
        if path.suffix not in (".json", ".h5") or not path.is_file():
            continue
        is_sidecar, precision = _sidecar_precision(path)
        if is_sidecar:
            found[path.stem] = precision
    return found


def check_folder_precision(
    out: Path, precision: str, recorded: dict[str, str | None], allow_mixed: bool = False
) -> None:
    """Refuse (InputError) a run in `precision` into a folder that holds features of another one,
    unless `allow_mixed`. Sidecars that record no precision are not compared (nothing says)."""
    other = {name: p for name, p in recorded.items() if p is not None and p != precision}
    if not other:
        return
    name, found = next(iter(sorted(other.items())))
    if allow_mixed:
        logger.warning(
            "%s: %d outputs are %s (e.g. %s); this run adds %s (--allow-mixed-precision)",
            out,
            len(other),
            found,
            name,
            precision,
        )
        return
    raise InputError(
        f"--out {out}: holds features extracted in {found} ({name} and {len(other) - 1} more); "
        f"this run is {precision}. Use --precision {found}, another --out, "
        "or --allow-mixed-precision"
    )

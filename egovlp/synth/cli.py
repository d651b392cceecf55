"""`egovlp synth OUT_DIR`: plan the world, render the videos in worker processes, write the annotations.

Videos are written first and the annotation files last (world.json the very last), so a folder with
`world.json` holds a complete dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path

from egovlp.cli_args import OneLineParser
from egovlp.errors import InputError
from egovlp.procs import die_with_parent
from egovlp.synth.annotations import write_annotations
from egovlp.synth.egomask import (
    GroundingPlan,
    make_grounding_world,
    render_grounding_frame,
    write_grounding_split,
)
from egovlp.synth.fho import FHOVideoPlan, make_fho_world, render_fho_frame
from egovlp.synth.fho_annotations import write_fho_annotations
from egovlp.synth.render import render_frame, render_video
from egovlp.synth.world import VideoPlan, frame_size, make_world
from egovlp.validate import non_negative_int, output_dir, positive_float, positive_int

log = logging.getLogger(__name__)

# Many short scenes rather than a few long ones: with 18 training scenes a tiny model trained from
# scratch memorizes scene -> objects (EgoMCQ inter ~50% on new scenes); with 30 it learns the objects
# (~73% inter, ~68% intra after 300 steps of 16 + 16 scene-aware negatives). 40 x 30 s renders in
# ~75 s on one core.
DEFAULT_VIDEOS = 40
DEFAULT_DURATION = 30.0
DEFAULT_SHORT_SIDE = 256
MIN_DURATION = 8.0


def _render_job(job: tuple[VideoPlan | FHOVideoPlan | GroundingPlan, str, int]) -> str:
    plan, path, short_side = job
    frame_fn = render_frame
    if isinstance(plan, FHOVideoPlan):
        frame_fn = render_fho_frame
    elif isinstance(plan, GroundingPlan):
        frame_fn = render_grounding_frame
    render_video(plan, Path(path), short_side, frame_fn)
    return plan.video_uid


def synthesize(
    out_dir: str | os.PathLike,
    videos: int = DEFAULT_VIDEOS,
    seed: int = 0,
    short_side: int = DEFAULT_SHORT_SIDE,
    duration: float = DEFAULT_DURATION,
    workers: int | None = None,
    val_videos: int | None = None,
    render: bool = True,
    progress: bool = False,
    fho_videos: int | None = None,
    egomask_videos: int | None = None,
) -> dict:
    """Write the synthetic dataset into out_dir; returns a summary (counts, sizes, seconds).

    `val_videos` defaults to a quarter of the videos (at least one); `render=False` writes the
    annotation files only (they do not depend on the videos). `fho_videos` (default a quarter of
    `videos`, at least 2) state-change videos of 4 clips each go to `videos/` too (egovlp.synth.fho), and
    so do `egomask_videos` (default 3/5 of `videos` rounded to a multiple of 3, at least 6) grounding
    videos, annotated in EgoMask's layout under `egomask/{train,val}/` (egovlp.synth.egomask).
    """
    if videos < 2:
        raise InputError(f"--videos {videos}: need at least 2 (train and val)")
    n_val = max(1, round(videos / 4)) if val_videos is None else val_videos
    if not 1 <= n_val < videos:
        raise InputError(f"--val-videos {n_val}: must be between 1 and {videos - 1} for {videos} videos")
    if not 32 <= short_side <= 2160:
        raise InputError(f"--short-side {short_side}: must be between 32 and 2160 pixels")
    if not MIN_DURATION <= duration <= 3600:
        raise InputError(f"--duration {duration}: must be between {MIN_DURATION:g} and 3600 seconds")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    workers = workers or min(4, os.cpu_count() or 1)
    if workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")

    n_fho = max(2, videos // 4) if fho_videos is None else fho_videos
    if n_fho < 2:
        raise InputError(f"--fho-videos {n_fho}: need at least 2 (train and val)")

    n_ground = max(6, videos * 3 // 5 // 3 * 3) if egomask_videos is None else egomask_videos
    if n_ground < 3:
        raise InputError(f"--egomask-videos {n_ground}: need at least 3 (train and val)")

    t0 = time.perf_counter()
    plans = make_world(videos, seed, float(duration), n_val)
    fho_plans = make_fho_world(n_fho, seed, max(1, round(n_fho / 4)))
    ground_plans = make_grounding_world(n_ground, seed)
    out.mkdir(parents=True, exist_ok=True)
    if render:
        video_dir = out / "videos"
        video_dir.mkdir(exist_ok=True)
        # the narrated videos and the state-change videos share one folder (uids never collide)
        jobs = [
            (p, str(video_dir / f"{p.video_uid}.mp4"), short_side)
            for p in [*plans, *fho_plans, *ground_plans]
        ]
        stale = {f.name for f in video_dir.glob("*.mp4")} - {Path(j[1]).name for j in jobs}
        if stale:
            # not ours to delete, but consumers that list the folder would pick them up
            log.warning("%s holds %d video(s) that are not part of this dataset", video_dir, len(stale))
        _run_jobs(jobs, workers, progress)
    counts = write_fho_annotations(out, fho_plans)  # before world.json, which marks a complete folder
    counts.update(write_grounding_split(out, ground_plans, short_side))
    counts.update(write_annotations(out, plans, seed, short_side))
    width, height = frame_size(short_side)
    return {
        "out": str(out),
        "videos": videos,
        "train": sum(p.split == "train" for p in plans),
        "val": sum(p.split == "val" for p in plans),
        "actions": sum(len(p.actions) for p in plans),
        "fho_videos": n_fho,
        "width": width,
        "height": height,
        **counts,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _run_jobs(
    jobs: list[tuple[VideoPlan | FHOVideoPlan | GroundingPlan, str, int]], workers: int, progress: bool
) -> None:
    from tqdm import tqdm

    def bar() -> tqdm:
        return tqdm(total=len(jobs), desc="synth videos", unit="video", file=sys.stderr, disable=not progress)

    if workers == 1 or len(jobs) == 1:
        with bar() as b:
            for job in jobs:
                _render_job(job)
                b.update()
        return
    # fork where there is one: a spawned worker would re-import the whole package (torch included)
    # for work that needs numpy and PyAV only. The pool starts before the progress bar's thread.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = ctx.Pool(min(workers, len(jobs)), initializer=die_with_parent, initargs=(os.getpid(),))
    with pool, bar() as b:
        for _uid in pool.imap_unordered(_render_job, jobs):
            b.update()


def add_world_arguments(
    p: argparse.ArgumentParser, videos: int = DEFAULT_VIDEOS, val_videos: int | None = None
) -> None:
    """The world's size and seed, as `egovlp synth` and `make demo` take them."""
    p.add_argument("--videos", type=positive_int, default=videos, help="videos, train and val (%(default)s)")
    val_default = "a quarter" if val_videos is None else "%(default)s"
    p.add_argument(
        "--val-videos", type=positive_int, default=val_videos, help=f"of which val ({val_default})"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="same seed and arguments, same files")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="egovlp synth",
        description="Write the synthetic egocentric dataset: videos/{video_uid}.mp4, egoclip.csv, egomcq.json, "
        "nlq/moments/vq_{train,val}.json, verb/noun taxonomies, split.json, world.json, the object "
        "state changes: their own videos (also in videos/) with fho_oscc-pnr_{train,val}.json, and the "
        "grounding split in EgoMask's layout: egomask/{train,val}/ (its videos in videos/ too).",
    )
    p.add_argument("out_dir", help="output folder (created; existing files of the dataset are replaced)")
    add_world_arguments(p)
    p.add_argument(
        "--short-side", type=positive_int, default=DEFAULT_SHORT_SIDE, help="frame height, px (4:3)"
    )
    p.add_argument("--duration", type=positive_float, default=DEFAULT_DURATION, help="seconds per video")
    p.add_argument(
        "--workers", type=positive_int, default=None, help="render processes (default min(4, cpus))"
    )
    p.add_argument(
        "--fho-videos",
        type=positive_int,
        default=None,
        help="state-change videos, 4 OSCC/PNR clips each (default a quarter of --videos, at least 2)",
    )
    p.add_argument(
        "--egomask-videos",
        type=positive_int,
        default=None,
        help="grounding videos in EgoMask's layout under egomask/ (default 3/5 of --videos, at least 6)",
    )
    p.add_argument("--annotations-only", action="store_true", help="write the annotation files, no videos")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output_dir(args.out_dir, "out_dir")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    options = vars(args)  # the parser's names are synthesize's
    render = not options.pop("annotations_only")
    summary = synthesize(**options, render=render, progress=True)
    print(json.dumps(summary))
    return 0

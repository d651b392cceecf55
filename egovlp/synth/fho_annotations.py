"""The synthetic state-change clips as Ego4D FHO annotations: fho_oscc-pnr_{train,val}.json (docs/design.md C.7)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from egovlp.io import write_json_atomic
from egovlp.synth.fho import UID_NAMESPACE, WINDOW_FRAMES, Episode, FHOVideoPlan
from egovlp.synth.world import CLIP_MARGIN, FPS


def _clip_uid(plan: FHOVideoPlan) -> str:
    return f"{plan.video_uid}_clip0"


def _r(x: float) -> float:
    return round(float(x), 3)


def fho_clip(plan: FHOVideoPlan, ep: Episode, clip_id: int) -> dict:
    """One C.7 clip: the episode's window in the parent video and in the Ego4D clip (1 s in)."""
    offset = int(round(CLIP_MARGIN * FPS))
    start, end = ep.start_frame, ep.start_frame + WINDOW_FRAMES
    pnr = ep.pnr_frame if ep.state_change else None
    return {
        "unique_id": str(uuid.uuid5(UID_NAMESPACE, f"{plan.video_uid}/fho/{ep.index}")),
        "video_uid": plan.video_uid,
        "clip_uid": _clip_uid(plan),
        "clip_id": clip_id,
        "parent_start_sec": _r(start / FPS),
        "parent_end_sec": _r(end / FPS),
        "parent_start_frame": start,
        "parent_end_frame": end,
        "clip_start_sec": _r((start - offset) / FPS),
        "clip_end_sec": _r((end - offset) / FPS),
        "clip_start_frame": start - offset,
        "clip_end_frame": end - offset,
        "parent_pnr_frame": pnr,
        "clip_pnr_frame": None if pnr is None else pnr - offset,
        "state_change": ep.state_change,
    }


def fho_json(plans: Sequence[FHOVideoPlan], split: str) -> dict:
    clips = []
    for plan in plans:
        if plan.split != split:
            continue
        for ep in plan.episodes:
            clips.append(fho_clip(plan, ep, len(clips)))
    return {
        "version": "v1",
        "date": "synthetic",
        "description": f"egovlp synthetic world: object state changes (OSCC / PNR) {split}",
        "split": split,
        "clips": clips,
    }


def write_fho_annotations(out_dir: Path, plans: Sequence[FHOVideoPlan]) -> dict:
    """fho_oscc-pnr_{train,val}.json (atomic); returns counts per split and class."""
    counts = {}
    for split in ("train", "val"):
        doc = fho_json(plans, split)
        write_json_atomic(doc, out_dir / f"fho_oscc-pnr_{split}.json")
        counts[f"fho_{split}_clips"] = len(doc["clips"])
        counts[f"fho_{split}_state_changes"] = sum(c["state_change"] for c in doc["clips"])
    return counts

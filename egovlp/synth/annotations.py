"""Annotation files of the synthetic world, in the real EgoClip / EgoMCQ / Ego4D layouts.

Everything is derived from the video plans of `world.py`: EgoClip rows and EgoMCQ questions from the
narrated actions, NLQ windows from the last matching action, MQ labels from every action's verb, and
VQ2D boxes from the same geometry the renderer paints with. The Ego4D files describe one clip per
video that starts `CLIP_MARGIN` seconds into it, so their times are clip-relative (video time minus
the offset) everywhere except in the `video_*` fields.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from pathlib import Path

from egovlp.formats import write_json_atomic
from egovlp.formats.egoclip import EgoClipRow, format_tags, write_egoclip
from egovlp.formats.egomcq import INTER, INTRA, MCQItem, write_egomcq
from egovlp.formats.taxonomy import TaxonomyEntry, write_taxonomy
from egovlp.synth.geometry import object_box
from egovlp.synth.world import (
    CLIP_MARGIN,
    FPS,
    NOUNS,
    VERBS,
    Action,
    VideoPlan,
    frame_size,
    object_pose,
    rng_for,
)
from egovlp.timebase import VQ_FPS, VQ_STEP

NARRATION_SOURCE = "narration_pass_1"
VQ_QUERY_SETS = 3
# uuid5 namespace for annotation uids: stable across runs, distinct per clip and task
_UID_NAMESPACE = uuid.UUID("6f1c2a8e-4b7d-5e90-a1c3-2d4e5f607182")

NLQ_WHERE = "Place: Where did I put X?"
NLQ_WHEN = "Objects: When did I do X with object Y?"


def narration(a: Action) -> str:
    """EgoClip narration text: "#C C picks up the red cup"."""
    return f"#C C {VERBS[a.verb].third} the {NOUNS[a.noun].phrase}"


def _r(x: float) -> float:
    return round(float(x), 3)


def clip_uid(plan: VideoPlan) -> str:
    return f"{plan.video_uid}_clip0"


# ------------------------------------------------------------------------------------------------
# taxonomy, split, world


def taxonomies() -> tuple[list[TaxonomyEntry], list[TaxonomyEntry]]:
    """(verbs, nouns) vocabulary entries; ids are the tag ids of egoclip.csv."""
    verbs = [TaxonomyEntry(v.id, v.name, [v.third, v.base]) for v in VERBS]
    nouns = [TaxonomyEntry(n.id, n.name, [n.name, n.phrase]) for n in NOUNS]
    return verbs, nouns


def world_json(plans: Sequence[VideoPlan], seed: int, short_side: int) -> dict:
    """The timeline: every action with its video, times, verb and noun, plus when its object is visible."""
    width, height = frame_size(short_side)
    return {
        "seed": seed,
        "fps": FPS,
        "width": width,
        "height": height,
        "clip_offset_sec": CLIP_MARGIN,
        "verbs": [{"id": v.id, "name": v.name} for v in VERBS],
        "nouns": [{"id": n.id, "name": n.name, "colour": n.colour, "shape": n.shape} for n in NOUNS],
        "videos": [
            {
                "video_uid": p.video_uid,
                "split": p.split,
                "duration": p.duration,
                "num_frames": int(round(p.duration * FPS)),
                "nouns": [NOUNS[n].name for n in p.nouns],
            }
            for p in plans
        ],
        "actions": [
            {
                "video_uid": a.video_uid,
                "index": a.index,
                "start": a.start,
                "end": a.end,
                "verb": VERBS[a.verb].name,
                "noun": NOUNS[a.noun].name,
                "verb_id": a.verb,
                "noun_id": a.noun,
                "visible_start": a.visible_start,
                "visible_end": a.visible_end,
                "narration": narration(a),
            }
            for p in plans
            for a in p.actions
        ],
    }


# ------------------------------------------------------------------------------------------------
# EgoClip and EgoMCQ


def _row(plan: VideoPlan, a: Action) -> dict:
    return {
        "video_uid": plan.video_uid,
        "video_dur": plan.duration,
        "narration_source": NARRATION_SOURCE,
        "narration_ind": a.index,
        "narration_time": _r((a.start + a.end) / 2),
        "clip_start": a.start,
        "clip_end": a.end,
        "clip_text": narration(a),
        "tag_verb": format_tags([a.verb]),
        "tag_noun": format_tags([a.noun]),
    }


def egoclip_rows(plans: Sequence[VideoPlan]) -> list[EgoClipRow]:
    """One row per narrated action of the train videos; the clip is the action's window."""
    rows = []
    for plan in plans:
        if plan.split != "train":
            continue
        for a in plan.actions:
            r = _row(plan, a)
            r["tag_verb"], r["tag_noun"] = [a.verb], [a.noun]
            rows.append(EgoClipRow(clip_idx=len(rows), **r))
    return rows


def egomcq_items(plans: Sequence[VideoPlan], seed: int) -> list[MCQItem]:
    """Inter- and intra-video questions over the val videos, one of each per action where possible.

    The wrong choices never share the query's (verb, noun): intra from the same video, inter one each
    from four other val videos. The answer's position is random.
    """
    rng = rng_for(seed, 2)
    val = [p for p in plans if p.split == "val"]
    items: list[MCQItem] = []

    def add(plan: VideoPlan, a: Action, wrong: list[tuple[VideoPlan, Action]], kind: int) -> None:
        answer = int(rng.integers(5))
        choices = [_row(p, b) for p, b in wrong]
        choices.insert(answer, _row(plan, a))
        items.append(MCQItem(str(len(items)), answer, _row(plan, a), choices, kind))

    for plan in val:
        for a in plan.actions:
            pair = (a.verb, a.noun)
            others = [
                (p, [b for b in p.actions if (b.verb, b.noun) != pair])
                for p in val
                if p is not plan and any((b.verb, b.noun) != pair for b in p.actions)
            ]
            if len(others) >= 4:
                picked = [others[i] for i in sorted(rng.choice(len(others), 4, replace=False))]
                add(plan, a, [(p, cands[int(rng.integers(len(cands)))]) for p, cands in picked], INTER)
            same = [b for b in plan.actions if (b.verb, b.noun) != pair]
            if len(same) >= 4:
                picked_same = [same[i] for i in sorted(rng.choice(len(same), 4, replace=False))]
                add(plan, a, [(plan, b) for b in picked_same], INTRA)
    return items


# ------------------------------------------------------------------------------------------------
# Ego4D episodic memory: one clip per video, offset by CLIP_MARGIN


def _clip_fields(plan: VideoPlan) -> dict:
    start, end = CLIP_MARGIN, plan.duration - CLIP_MARGIN
    return {
        "clip_uid": clip_uid(plan),
        "source_clip_uid": clip_uid(plan),
        "video_start_sec": start,
        "video_end_sec": end,
        "video_start_frame": int(round(start * FPS)),
        "video_end_frame": int(round(end * FPS)),
        "clip_start_sec": 0.0,
        "clip_end_sec": _r(end - start),
        "clip_start_frame": 0,
        "clip_end_frame": int(round((end - start) * FPS)),
    }


def _window(a: Action) -> dict:
    """An action's window, clip-relative, with its video-time and video-frame twins."""
    return {
        "clip_start_sec": _r(a.start - CLIP_MARGIN),
        "clip_end_sec": _r(a.end - CLIP_MARGIN),
        "video_start_sec": a.start,
        "video_end_sec": a.end,
        "video_start_frame": int(round(a.start * FPS)),
        "video_end_frame": int(round(a.end * FPS)),
    }


def _doc(plans: Sequence[VideoPlan], split: str, task: str, clip_fn) -> dict:
    return {
        "version": "v1",
        "date": "synthetic",
        "description": f"egovlp synthetic world: {task} {split}",
        "videos": [
            {"video_uid": p.video_uid, "split": split, "clips": [clip_fn(p)]}
            for p in plans
            if p.split == split
        ],
    }


def nlq_queries(plan: VideoPlan) -> list[dict]:
    """Language queries of a clip: "when did I <verb> the <object>?" for every (verb, noun) pair, and
    "where did I put the <object>?" for every object that is put down; each points to the LAST
    matching action in the clip."""
    last: dict[tuple[int, int], Action] = {}
    for a in plan.actions:  # in time order, so later actions overwrite earlier ones
        last[(a.verb, a.noun)] = a
    queries = []
    for (verb, noun), a in last.items():
        phrase = NOUNS[noun].phrase
        text = f"When did I {VERBS[verb].base} the {phrase}?"
        queries.append(
            {**_window(a), "template": NLQ_WHEN, "query": text, "slot_x": phrase, "verb_x": VERBS[verb].base}
        )
    put_down = next(v.id for v in VERBS if v.name == "put_down")
    last_put = {noun: a for (verb, noun), a in last.items() if verb == put_down}
    for noun in sorted(last_put, key=lambda n: last_put[n].index):
        phrase = NOUNS[noun].phrase
        text = f"Where did I put the {phrase}?"
        queries.append({**_window(last_put[noun]), "template": NLQ_WHERE, "query": text, "slot_x": phrase})
    return queries


def nlq_json(plans: Sequence[VideoPlan], split: str) -> dict:
    def clip(p: VideoPlan) -> dict:
        uid = str(uuid.uuid5(_UID_NAMESPACE, f"{clip_uid(p)}/nlq/0"))
        return {
            **_clip_fields(p),
            "annotations": [{"annotation_uid": uid, "language_queries": nlq_queries(p)}],
        }

    return _doc(plans, split, "NLQ", clip)


def moments_json(plans: Sequence[VideoPlan], split: str) -> dict:
    """One primary label per action; the class is the verb."""

    def clip(p: VideoPlan) -> dict:
        labels = []
        for a in p.actions:
            w = _window(a)
            labels.append(
                {
                    "start_time": w["clip_start_sec"],
                    "end_time": w["clip_end_sec"],
                    "video_start_time": w["video_start_sec"],
                    "video_end_time": w["video_end_sec"],
                    "video_start_frame": w["video_start_frame"],
                    "video_end_frame": w["video_end_frame"],
                    "label": VERBS[a.verb].name,
                    "primary": True,
                }
            )
        return {**_clip_fields(p), "annotations": [{"annotator_uid": "synth", "labels": labels}]}

    return _doc(plans, split, "moment queries", clip)


def _vq_box(plan: VideoPlan, a: Action, frame: int, width: int, height: int) -> dict | None:
    """The object's box at 5 fps clip frame `frame`, computed from the rendered geometry."""
    t = (int(round(CLIP_MARGIN * FPS)) + VQ_STEP * frame) / FPS  # the same float the renderer uses
    pose = object_pose(a, plan.scene, t, width, height)
    box = None if pose is None else object_box(pose, width, height)
    if box is None:
        return None
    x, y, w, h = box
    return {"frame_number": frame, "x": x, "y": y, "width": w, "height": h}


def _to_vq_frame(t_video: float) -> float:
    return (t_video - CLIP_MARGIN) * VQ_FPS


def vq_query_sets(plan: VideoPlan, seed: int, short_side: int) -> dict[str, dict]:
    """Up to three query sets, each a different object that appears at least twice.

    For appearance k of the object the query frame falls after it ends and before appearance k + 1,
    so k is the most recent appearance in the search window [0, query_frame); the response track is
    its 5 fps boxes, and the visual crop comes from appearance k + 1, after the query frame.
    """
    width, height = frame_size(short_side)
    rng = rng_for(seed, 3, plan.index)
    visits: dict[int, list[Action]] = {}
    for a in plan.actions:
        visits.setdefault(a.noun, []).append(a)
    candidates = [n for n in sorted(visits) if len(visits[n]) >= 2]
    chosen = [candidates[i] for i in rng.permutation(len(candidates))[:VQ_QUERY_SETS]]
    sets: dict[str, dict] = {}
    for noun in chosen:
        k = int(rng.integers(len(visits[noun]) - 1))
        seen, later = visits[noun][k], visits[noun][k + 1]
        # 5 fps frames strictly after appearance k is gone and strictly before k + 1 comes in
        lo = math.floor(_to_vq_frame(seen.visible_end)) + 1
        hi = math.ceil(_to_vq_frame(later.visible_start)) - 1
        if hi < lo:
            continue
        query_frame = int(rng.integers(lo, hi + 1))
        first = max(0, math.ceil(_to_vq_frame(seen.visible_start)))
        track = [_vq_box(plan, seen, f, width, height) for f in range(first, query_frame)]
        track = [b for b in track if b is not None]
        crop = _vq_box(plan, later, int(round(_to_vq_frame((later.start + later.end) / 2))), width, height)
        if not track or crop is None:
            continue
        sets[str(len(sets) + 1)] = {
            "is_valid": True,
            "query_frame": query_frame,
            "object_title": NOUNS[noun].name,
            "visual_crop": {**crop, "original_width": width, "original_height": height},
            "response_track": track,
        }
    return sets


def vq_json(plans: Sequence[VideoPlan], split: str, seed: int, short_side: int) -> dict:
    def clip(p: VideoPlan) -> dict:
        uid = str(uuid.uuid5(_UID_NAMESPACE, f"{clip_uid(p)}/vq/0"))
        sets = vq_query_sets(p, seed, short_side)
        annotations = [{"annotation_uid": uid, "query_sets": sets, "warnings": []}] if sets else []
        return {**_clip_fields(p), "clip_fps": VQ_FPS, "annotations": annotations}

    return _doc(plans, split, "VQ2D", clip)


# ------------------------------------------------------------------------------------------------


def write_annotations(out_dir: Path, plans: Sequence[VideoPlan], seed: int, short_side: int) -> dict:
    """Write every annotation file into out_dir (atomically, world.json last); returns counts."""
    verbs, nouns = taxonomies()
    write_taxonomy(verbs, out_dir / "verb_taxonomy.json", "verb")
    write_taxonomy(nouns, out_dir / "noun_taxonomy.json", "noun")
    split = {s: [p.video_uid for p in plans if p.split == s] for s in ("train", "val")}
    write_json_atomic(split, out_dir / "split.json", indent=1)
    rows = egoclip_rows(plans)
    write_egoclip(rows, out_dir / "egoclip.csv")
    items = egomcq_items(plans, seed)
    write_egomcq(items, out_dir / "egomcq.json")
    counts = {
        "egoclip_rows": len(rows),
        "egomcq_inter": sum(i.type == INTER for i in items),
        "egomcq_intra": sum(i.type == INTRA for i in items),
    }
    for s in ("train", "val"):
        nlq = nlq_json(plans, s)
        write_json_atomic(nlq, out_dir / f"nlq_{s}.json")
        write_json_atomic(moments_json(plans, s), out_dir / f"moments_{s}.json")
        vq = vq_json(plans, s, seed, short_side)
        write_json_atomic(vq, out_dir / f"vq_{s}.json")
        counts[f"nlq_{s}_queries"] = sum(
            len(ann["language_queries"])
            for v in nlq["videos"]
            for c in v["clips"]
            for ann in c["annotations"]
        )
        counts[f"vq_{s}_query_sets"] = sum(
            len(ann["query_sets"]) for v in vq["videos"] for c in v["clips"] for ann in c["annotations"]
        )
    write_json_atomic(world_json(plans, seed, short_side), out_dir / "world.json")
    return counts

"""The grounding world: videos with several objects on the table and EgoMask-layout annotations.

Videos of their own (`videos/{video_uid}.mp4`, uids that never collide with the narrated or the
state-change videos), so the narrated world's files stay exactly as they were. Each video holds 2 or 3
small objects, each in its own place on the table, each in view for one or two visits (it comes up
from below the frame and leaves the same way), so an object is absent from a good share of the frames.
The camera wearer acts on some of them (the hand holds it and it is picked up, pushed, shaken, turned,
pulled or squeezed during the visit) and leaves the others alone. In most videos two objects are
look-alikes (the same colour, shape and name), one acted on and one left alone, in view together:
only the action tells them apart.

Referring expressions name the colour, the shape, the object and what the wearer does with it ("the
red trapezoid cup that I shake", "the red trapezoid cup that I leave on the table"). Subsets are
short, medium and long by duration. The renderer's own geometry gives every object's exact visible
mask (minus what the hand or an object drawn over it hides) on every 5 fps frame, written in EgoMask's
layout (egovlp.metrics.egomask) under `egomask/{train,val}/`, with the inputs the extractor reads:
`videos.txt` (preset vq2d: one patch grid per 5 fps frame, frame name = 5 fps frame number) and
`expressions_nlq.json` (preset text: key `{video}/egomask_{exp_id}`).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from egovlp.io import write_bytes_atomic, write_json_atomic
from egovlp.metrics.egomask import SUBSETS, write_ground_truth
from egovlp.synth import geometry as geo
from egovlp.synth.render import _box_blur, _draw_hand, _draw_object
from egovlp.synth.world import (
    ENTER,
    FPS,
    NOUNS,
    RADIUS,
    VERBS,
    Y_REST,
    Action,
    ObjectPose,
    Scene,
    _make_scene,
    _smooth,
    camera_offset,
    frame_size,
    object_pose,
    place_object,
    rng_for,
)
from egovlp.timebase import VQ_FPS

DURATIONS = {"short": (6.0, 8.0), "medium": (12.0, 15.0), "long": (20.0, 25.0)}
SLOTS = (-0.42, 0.0, 0.42)  # table places, frame heights from the centre
SCALE = (0.5, 0.65)  # objects are smaller than the narrated world's (EgoMask: small objects)
VISIT_SECONDS = (1.6, 3.2)  # in view, entry and exit included
ACT_VERBS = ("pick_up", "push", "shake", "turn", "pull", "squeeze")
LOOKALIKE_SHARE = 0.7  # videos with two look-alike objects
# a small vocabulary, so every colour and shape word of val is seen in training
NOUN_IDS = tuple(range(10))
ANNOTATION_UID = "egomask"
UID_NAMESPACE = uuid.UUID("5d1c2b7e-3f4a-4e8b-9a61-2c7d9e0f4b13")


@dataclass(frozen=True)
class GroundObject:
    obj_id: str
    noun: int
    x0: float
    scale: float
    verb: int | None  # what the wearer does with it (None: left on the table)
    direction: int
    hand: int
    visits: tuple[tuple[float, float], ...]  # (start, end) video seconds in view, entry and exit included


@dataclass(frozen=True)
class GroundingPlan:
    video_uid: str
    index: int
    split: str
    subset: str
    duration: float
    scene: Scene
    objects: tuple[GroundObject, ...]


def _visits(rng: np.random.Generator, duration: float, n: int, near: tuple | None) -> tuple:
    """n non-overlapping visits; with `near`, visits that overlap those (a look-alike seen together)."""
    if near is not None:
        out = []
        for s, e in near:
            a = max(0.0, s + rng.uniform(-0.6, 0.4))
            out.append((round(a, 3), round(min(duration, max(a + 1.2, e + rng.uniform(-0.4, 0.6))), 3)))
        return tuple(out)
    slot = duration / n
    out = []
    for k in range(n):
        length = min(rng.uniform(*VISIT_SECONDS), slot - 0.2)
        a = k * slot + rng.uniform(0.1, slot - length - 0.05)
        out.append((round(a, 3), round(a + length, 3)))
    return tuple(out)


def _make_plan(rng: np.random.Generator, video_uid: str, index: int, split: str) -> GroundingPlan:
    subset = SUBSETS[index % 3]
    duration = round(float(rng.uniform(*DURATIONS[subset])), 1)
    scene = _make_scene(rng, duration)
    n_obj = int(rng.integers(2, 4))
    visits_each = 1 if subset == "short" else 2
    slots = rng.permutation(len(SLOTS))[:n_obj]
    nouns = [int(n) for n in rng.choice(NOUN_IDS, size=n_obj, replace=False)]
    lookalike = rng.random() < LOOKALIKE_SHARE
    if lookalike:
        nouns[1] = nouns[0]
    acted = [bool(rng.random() < 0.5) for _ in range(n_obj)]
    if lookalike:
        acted[0], acted[1] = True, False
    verb_ids = [v.id for v in VERBS if v.name in ACT_VERBS]
    objects = []
    for k in range(n_obj):
        near = objects[0].visits if lookalike and k == 1 else None
        objects.append(
            GroundObject(
                obj_id=str(k + 1),
                noun=nouns[k],
                x0=SLOTS[int(slots[k])],
                scale=round(float(rng.uniform(*SCALE)), 4),
                verb=int(rng.choice(verb_ids)) if acted[k] else None,
                direction=int(rng.choice([-1, 1])),
                hand=-1 if SLOTS[int(slots[k])] < 0 else 1,
                visits=_visits(rng, duration, visits_each, near),
            )
        )
    return GroundingPlan(video_uid, index, split, subset, duration, scene, tuple(objects))


def make_grounding_world(n_videos: int, seed: int) -> list[GroundingPlan]:
    """Plans of `n_videos` grounding videos: subsets cycle short, medium, long; every third group of
    three is val (at least one group), so both splits hold every subset."""
    groups = -(-n_videos // 3)
    val = {g for g in range(groups) if g % 3 == 2} or {groups - 1}
    plans = []
    for index in range(n_videos):
        rng = rng_for(seed, 10, index)
        video_uid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        plans.append(_make_plan(rng, video_uid, index, "val" if index // 3 in val else "train"))
    return plans


def expression(obj: GroundObject) -> str:
    noun = NOUNS[obj.noun]
    what = f"that I {VERBS[obj.verb].base}" if obj.verb is not None else "that I leave on the table"
    return f"the {noun.colour} {noun.shape} {noun.name} {what}"


# ---- poses, frames and masks --------------------------------------------------------------------------


def _pose(obj: GroundObject, scene: Scene, t: float, size: tuple[int, int]) -> ObjectPose | None:
    for start, end in obj.visits:
        if not start <= t <= end:
            continue
        if obj.verb is not None:  # the narrated world's action, held over the visit
            a = Action(
                "",
                0,
                obj.verb,
                obj.noun,
                round(start + ENTER, 3),
                round(end - ENTER, 3),
                obj.x0,
                Y_REST - 0.05,
                obj.scale,
                obj.direction,
                obj.hand,
            )
            return object_pose(a, scene, t, *size)
        if t < start + ENTER:  # comes up from below the frame, and leaves the same way
            k = 1 - _smooth((t - start) / ENTER)
        elif t > end - ENTER:
            k = _smooth((t - end + ENTER) / ENTER)
        else:
            k = 0.0
        y = Y_REST + (0.55 + RADIUS * obj.scale * 1.6 - Y_REST) * k
        return place_object(obj.noun, obj.scale, obj.x0, y, (0.0, 1.0, 1.0, 0.0, 0.0, False), scene, t, size)
    return None


def _layers(plan: GroundingPlan, t: float, size: tuple[int, int]) -> list[tuple[GroundObject, ObjectPose]]:
    """Objects in view at t in drawing order: the untouched ones first, the held ones (and hands) last."""
    posed = [(o, _pose(o, plan.scene, t, size)) for o in plan.objects]
    return sorted([(o, p) for o, p in posed if p is not None], key=lambda op: op[0].verb is not None)


def render_grounding_frame(plan: GroundingPlan, t: float, bg) -> np.ndarray:
    """The frame at video time t: uint8 [H, W, 3]."""
    j, width, height = bg.margin, bg.width, bg.height
    dx, dy = camera_offset(plan.scene, t, height)
    frame = bg.canvas[j + dy : j + dy + height, j + dx : j + dx + width].copy()
    for obj, pose in _layers(plan, t, (width, height)):
        _draw_object(frame, pose, NOUNS[obj.noun].rgb, bg.gain, (j + dx, j + dy))
        if obj.verb is not None:
            _draw_hand(frame, pose, obj.hand, plan.scene, bg.gain, (j + dx, j + dy))
    for t0, t1, length, axis in plan.scene.blur:
        if t0 <= t <= t1:
            frame = _box_blur(frame, max(2, round(length * height)), axis)
    return frame


def _object_mask(pose: ObjectPose, width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    e = geo.object_extent(pose)
    x0, y0, x1, y1 = geo.region(pose.cx, pose.cy, e, e, width, height)
    if x1 > x0 and y1 > y0:
        xs, ys = geo.grid(x0, y0, x1, y1)
        mask[y0:y1, x0:x1] = geo.object_sdf(pose, *geo.object_local(pose, xs, ys)) <= 0  # alpha >= 0.5
    return mask


def _hand_mask(pose: ObjectPose, side: int, width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    offset = geo.hand_offset(pose, side)
    d, sx0, sy0 = geo.hand_sdf(offset, side, height)
    px, py = int(math.floor(pose.cx)) + offset[0], int(math.floor(pose.cy)) + offset[1]
    x0, y0 = max(0, px + sx0), max(0, py + sy0)
    x1, y1 = min(width, px + sx0 + d.shape[1]), min(height, py + sy0 + d.shape[0])
    if x1 > x0 and y1 > y0:
        mask[y0:y1, x0:x1] = d[y0 - py - sy0 : y1 - py - sy0, x0 - px - sx0 : x1 - px - sx0] <= 0
    return mask


def visible_masks(plan: GroundingPlan, t: float, short_side: int) -> dict[str, np.ndarray | None]:
    """obj_id -> the object's visible pixels at time t (what is drawn over it removed), or None."""
    width, height = frame_size(short_side)
    layers = _layers(plan, t, (width, height))
    out: dict[str, np.ndarray | None] = {o.obj_id: None for o in plan.objects}
    covers = []  # per layer: the pixels drawn by this layer (object, then its hand)
    for obj, pose in layers:
        m = _object_mask(pose, width, height)
        hand = _hand_mask(pose, obj.hand, width, height) if obj.verb is not None else None
        covers.append((obj, m, hand))
    for i, (obj, m, hand) in enumerate(covers):
        visible = m & ~hand if hand is not None else m.copy()
        for _, later, later_hand in covers[i + 1 :]:
            visible &= ~later
            if later_hand is not None:
                visible &= ~later_hand
        out[obj.obj_id] = visible if visible.any() else None
    return out


# ---- files ---------------------------------------------------------------------------------------------


def frame_names(plan: GroundingPlan) -> list[str]:
    """The 5 fps frames of a video (the rows the vq2d preset extracts), as EgoMask-style names."""
    n = math.ceil(round(plan.duration * FPS) / (FPS / VQ_FPS))
    return [f"{i:05d}" for i in range(n)]


def write_grounding_split(out_dir: Path, plans: list[GroundingPlan], short_side: int) -> dict[str, int]:
    """`egomask/{train,val}/`: the EgoMask ground truth plus `videos.txt` and `expressions_nlq.json`."""
    counts = {"egomask_videos": len(plans), "egomask_expressions": 0}
    for split in ("train", "val"):
        mine = [p for p in plans if p.split == split]
        root = out_dir / "egomask" / split
        videos, nlq = [], []
        for p in mine:
            frames = frame_names(p)
            per_frame = {f: visible_masks(p, int(f) / VQ_FPS, short_side) for f in frames}
            objects = {
                o.obj_id: {
                    "category": NOUNS[o.noun].name,
                    "masks": {f: per_frame[f][o.obj_id] for f in frames},
                }
                for o in p.objects
            }
            exps = {str(k): {"exp": expression(o), "obj_id": o.obj_id} for k, o in enumerate(p.objects)}
            videos.append(
                {
                    "video": p.video_uid,
                    "subset": p.subset,
                    "frames": frames,
                    "objects": objects,
                    "expressions": exps,
                }
            )
            queries = [
                {
                    "query": e["exp"],
                    "clip_start_sec": p.objects[k].visits[0][0],
                    "clip_end_sec": p.objects[k].visits[0][1],
                }
                for k, e in enumerate(exps.values())
            ]
            nlq.append(
                {
                    "video_uid": p.video_uid,
                    "split": split,
                    "clips": [
                        {
                            "clip_uid": p.video_uid,
                            "video_start_sec": 0.0,
                            "video_end_sec": p.duration,
                            "clip_start_sec": 0.0,
                            "clip_end_sec": p.duration,
                            "annotations": [{"annotation_uid": ANNOTATION_UID, "language_queries": queries}],
                        }
                    ],
                }
            )
            counts["egomask_expressions"] += len(exps)
        write_ground_truth(root, videos)
        listing = "".join(f"../../videos/{p.video_uid}.mp4\n" for p in mine)
        write_bytes_atomic(listing.encode(), root / "videos.txt")
        write_json_atomic(
            {
                "version": "v1",
                "description": f"egovlp synthetic grounding {split}: the "
                "expressions as language queries, for `egovlp extract --preset text`",
                "videos": nlq,
            },
            root / "expressions_nlq.json",
        )
    return counts

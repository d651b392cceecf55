"""The synthetic egocentric world: taxonomy, per-video scenes, action timelines and object poses.

Everything visible in a synthetic video is a pure function of the `VideoPlan` built here, so the renderer
(`render.py`) and the annotation writers (`annotations.py`) derive pixels and boxes from the same
geometry. Positions inside a plan are in units of the frame's short side S, relative to the frame centre
(x to the right, y down), so one plan renders at any resolution; `object_pose` turns them into pixels.
"""

from __future__ import annotations

import colorsys
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

FPS = 30
CLIP_MARGIN = 1.0  # the Ego4D-style clip starts 1 s into the video and ends 1 s before its end
ENTER = 0.35  # seconds an object takes to come into view before its action (and to leave after it)
ACTION_SECONDS = (2.0, 3.5)  # duration of one action
GAP_SECONDS = (0.3, 0.9)  # empty table between one object leaving and the next entering
NOUNS_PER_VIDEO = (5, 6)
SKIN_HSV = ((0.08, 0.38, 0.88), (0.07, 0.48, 0.78), (0.06, 0.6, 0.55), (0.09, 0.3, 0.94))


@dataclass(frozen=True)
class Verb:
    id: int
    name: str
    third: str  # narration form: "C picks up the red cup"
    base: str  # query form: "When did I pick up the red cup?"


@dataclass(frozen=True)
class Noun:
    id: int
    name: str
    colour: str
    shape: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.name}"


# Every verb is a motion or state change that shows over the 4 frames sampled from its clip, and none
# depends on left/right, so horizontal-flip augmentation keeps the label true.
VERBS: tuple[Verb, ...] = tuple(
    Verb(i, name, third, base)
    for i, (name, third, base) in enumerate(
        [
            ("pick_up", "picks up", "pick up"),  # rises from the table
            ("put_down", "puts down", "put down"),  # descends and rests
            ("open", "opens", "open"),  # the top third lifts off: a gap opens
            ("close", "closes", "close"),  # the gap closes
            ("push", "pushes", "push"),  # slides sideways along the table
            ("pull", "pulls", "pull"),  # comes towards the camera: moves down and grows
            ("turn", "turns", "turn"),  # rotates half a turn (its dark cap shows the angle)
            ("shake", "shakes", "shake"),  # oscillates sideways, two cycles
            ("cut", "cuts", "cut"),  # a cut line appears, then the halves separate
            ("squeeze", "squeezes", "squeeze"),  # squashes to half its width
        ]
    )
)

# fmt: off
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),     "orange": (245, 135, 20),  "yellow": (245, 215, 30),  "green": (35, 165, 55),
    "cyan": (30, 195, 215),   "blue": (35, 70, 215),     "purple": (135, 50, 185),  "pink": (245, 125, 190),
    "brown": (125, 75, 35),   "white": (245, 245, 240),  "black": (20, 20, 25),     "grey": (135, 135, 140),
}
# fmt: on

SHAPES = ("disk", "box", "tall", "bar", "triangle", "ring", "cross", "diamond", "half", "trapezoid", "star")

NOUNS: tuple[Noun, ...] = tuple(
    Noun(i, name, colour, shape)
    for i, (name, colour, shape) in enumerate(
        [
            ("cup", "red", "trapezoid"),
            ("bowl", "blue", "half"),
            ("plate", "white", "disk"),
            ("knife", "grey", "bar"),
            ("bottle", "green", "tall"),
            ("apple", "red", "disk"),
            ("banana", "yellow", "bar"),
            ("box", "brown", "box"),
            ("book", "purple", "box"),
            ("phone", "black", "tall"),
            ("sponge", "yellow", "box"),
            ("tape", "grey", "ring"),
            ("lid", "black", "disk"),
            ("bag", "pink", "trapezoid"),
            ("towel", "cyan", "bar"),
            ("scissors", "orange", "cross"),
            ("pen", "blue", "bar"),
            ("jar", "orange", "tall"),
            ("carrot", "orange", "triangle"),
            ("cheese", "yellow", "triangle"),
            ("onion", "purple", "diamond"),
            ("brush", "brown", "bar"),
            ("tray", "green", "ring"),
            ("toy", "pink", "star"),
        ]
    )
)
assert len({(n.colour, n.shape) for n in NOUNS}) == len(NOUNS), "each noun needs its own colour x shape"
assert all(n.shape in SHAPES for n in NOUNS)


@dataclass(frozen=True)
class Action:
    """One narrated action: an object enters with the hand, undergoes the verb, and leaves."""

    video_uid: str
    index: int  # position in the video's timeline (the narration index)
    verb: int
    noun: int
    start: float  # video seconds, rounded to ms so every file agrees exactly
    end: float
    x0: float  # base position, S units from the frame centre
    y0: float
    scale: float  # object size factor
    direction: int  # +1 / -1: sense of push, turn and shake
    hand: int  # +1 right hand (enters from the bottom right), -1 left hand

    @property
    def visible_start(self) -> float:
        return round(self.start - ENTER, 3)

    @property
    def visible_end(self) -> float:
        return round(self.end + ENTER, 3)


@dataclass(frozen=True)
class Scene:
    """How one video looks: background, lighting, camera motion, motion-blur moments, hand colour."""

    wall_rgb: tuple[float, float, float]  # floats in [0, 1]
    table_rgb: tuple[float, float, float]
    horizon: float  # y of the wall/table edge, S units from the centre
    texture: str  # "wood" | "tiles" | "speckle" | "plain"
    texture_seed: int
    light_angle: float  # direction of the lighting gradient (radians)
    light_strength: float  # gain varies by +-strength across the frame
    jitter: tuple[float, ...]  # (amplitude, frequency Hz, phase) x 2 per axis, amplitudes in S units
    blur: tuple[tuple[float, float, float, int], ...]  # (start s, end s, length in S units, axis 0=y 1=x)
    skin_rgb: tuple[float, float, float]


@dataclass(frozen=True)
class VideoPlan:
    video_uid: str
    index: int
    split: str  # "train" | "val"
    duration: float
    scene: Scene
    nouns: tuple[int, ...]  # the video's object subset
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class ObjectPose:
    """An object's state in one frame, in frame pixels (camera motion included)."""

    shape: str
    cx: float
    cy: float
    radius: float  # pixels, before the squeeze factors
    angle: float  # radians
    sx: float  # width / height factors (squeeze, pull growth)
    sy: float
    lid: float  # gap between the top third and the rest, in radius units (open / close)
    split: float  # how far each half has moved away from the cut, radius units
    cut: bool  # draw the cut line


def frame_size(short_side: int) -> tuple[int, int]:
    """(width, height) of a 4:3 landscape frame with even dimensions, e.g. 256 -> (340, 256)."""
    height = short_side // 2 * 2
    width = int(height * 4 / 3) // 2 * 2
    return width, height


def jitter_pixels(short_side: int) -> int:
    """Largest camera shift in pixels; the background canvas is this much larger on every side."""
    return max(1, round(0.02 * short_side))


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream per purpose (and per video), fixed by the seed alone."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(r, 4), round(g, 4), round(b, 4))


def _make_scene(rng: np.random.Generator, duration: float) -> Scene:
    # muted, mid-bright surfaces so that saturated, white and black objects all stand out
    wall = _rgb(rng.random(), rng.uniform(0.03, 0.18), rng.uniform(0.5, 0.8))
    table = _rgb(rng.random(), rng.uniform(0.04, 0.2), rng.uniform(0.42, 0.68))
    jitter = []
    for _axis in range(2):
        for amp in (0.6, 0.4):
            jitter += [amp, float(rng.uniform(0.05, 0.35)), float(rng.uniform(0, 2 * math.pi))]
    blur = []
    for _ in range(int(rng.integers(2, 5))):  # a few moments of camera motion blur
        t0 = round(float(rng.uniform(0, max(duration - 0.5, 0.1))), 3)
        t1 = round(t0 + float(rng.uniform(0.2, 0.5)), 3)
        blur.append((t0, t1, float(rng.uniform(0.01, 0.03)), int(rng.integers(2))))
    skin = SKIN_HSV[int(rng.integers(len(SKIN_HSV)))]
    return Scene(
        wall_rgb=wall,
        table_rgb=table,
        horizon=round(float(rng.uniform(-0.38, -0.18)), 4),
        texture=("wood", "tiles", "speckle", "plain")[int(rng.integers(4))],
        texture_seed=int(rng.integers(2**31)),
        light_angle=round(float(rng.uniform(0, 2 * math.pi)), 4),
        light_strength=round(float(rng.uniform(0.08, 0.22)), 4),
        jitter=tuple(round(j, 4) for j in jitter),
        blur=tuple(sorted(blur)),
        skin_rgb=_rgb(skin[0] + rng.uniform(-0.01, 0.01), skin[1], skin[2]),
    )


def _make_actions(
    rng: np.random.Generator, video_uid: str, nouns: list[int], duration: float
) -> list[Action]:
    actions: list[Action] = []
    # every action (with its entry and exit) lies inside the Ego4D clip [CLIP_MARGIN, duration - CLIP_MARGIN]
    t = CLIP_MARGIN + rng.uniform(0.1, 0.5)
    last_noun = -1
    while True:
        length = rng.uniform(*ACTION_SECONDS)
        start = round(t + ENTER, 3)
        end = round(start + length, 3)
        if end + ENTER > duration - CLIP_MARGIN:
            break
        # no immediate repeat, so every appearance of an object is a separate visit
        choices = [n for n in nouns if n != last_noun]
        noun = int(choices[int(rng.integers(len(choices)))])
        actions.append(
            Action(
                video_uid=video_uid,
                index=len(actions),
                verb=int(rng.integers(len(VERBS))),
                noun=noun,
                start=start,
                end=end,
                x0=round(float(rng.uniform(-0.08, 0.08)), 4),
                y0=round(float(rng.uniform(-0.03, 0.05)), 4),
                scale=round(float(rng.uniform(0.9, 1.1)), 4),
                direction=int(rng.choice([-1, 1])),
                hand=int(rng.choice([-1, 1])),
            )
        )
        last_noun = noun
        t = end + ENTER + rng.uniform(*GAP_SECONDS)
    return actions


def plan_videos(
    n_videos: int, seed: int, n_val: int, streams: tuple[int, int], make_plan: Callable[..., Any]
) -> list:
    """The plan loop every world shares: `n_val` val videos drawn from stream `streams[0]`, then one
    stream per video (`streams[1]`, index), so a video's content does not depend on how many there are.

    `make_plan(rng, video_uid, index, split)` draws the rest of a plan from the video's stream.
    """
    val = set(rng_for(seed, streams[0]).permutation(n_videos)[:n_val].tolist())
    plans = []
    for index in range(n_videos):
        rng = rng_for(seed, streams[1], index)
        video_uid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        plans.append(make_plan(rng, video_uid, index, "val" if index in val else "train"))
    return plans


def make_world(n_videos: int, seed: int, duration: float, n_val: int) -> list[VideoPlan]:
    """Plans for `n_videos` videos of `duration` seconds; `n_val` of them (chosen at random) are val."""

    def plan(rng: np.random.Generator, video_uid: str, index: int, split: str) -> VideoPlan:
        n_nouns = int(rng.integers(NOUNS_PER_VIDEO[0], NOUNS_PER_VIDEO[1] + 1))
        nouns = sorted(rng.choice(len(NOUNS), size=n_nouns, replace=False).tolist())
        scene = _make_scene(rng, duration)
        actions = tuple(_make_actions(rng, video_uid, nouns, duration))
        return VideoPlan(video_uid, index, split, duration, scene, tuple(nouns), actions)

    return plan_videos(n_videos, seed, n_val, (0, 1), plan)


def camera_offset(scene: Scene, t: float, short_side: int) -> tuple[int, int]:
    """Whole-frame camera shift (dx, dy) in pixels at video time t: two slow sinusoids per axis."""
    j = jitter_pixels(short_side)
    p = scene.jitter
    dx = p[0] * math.sin(2 * math.pi * p[1] * t + p[2]) + p[3] * math.sin(2 * math.pi * p[4] * t + p[5])
    dy = p[6] * math.sin(2 * math.pi * p[7] * t + p[8]) + p[9] * math.sin(2 * math.pi * p[10] * t + p[11])
    return int(round(j * dx)), int(round(j * dy))


def _smooth(u: float, a: float = 0.0, b: float = 1.0) -> float:
    """Smoothstep of u between a and b: eases motions in and out."""
    x = min(max((u - a) / (b - a), 0.0), 1.0)
    return x * x * (3 - 2 * x)


# y levels (S units from the centre): resting on the table, lifted, held mid-air
Y_REST, Y_HIGH = 0.2, -0.17
RADIUS = 0.18  # object radius in S units at scale 1: large, so the object dominates its clip


def _action_state(a: Action, u: float) -> tuple[float, float, float, float, float, float, float, bool]:
    """(x, y, angle, sx, sy, lid, split, cut) at action phase u in [0, 1]; x, y in S units."""
    name = VERBS[a.verb].name
    x, y = a.x0, a.y0
    angle, sx, sy, lid, split, cut = 0.0, 1.0, 1.0, 0.0, 0.0, False
    if name == "pick_up":
        y = Y_REST + (Y_HIGH - Y_REST) * _smooth(u, 0.05, 0.95)
    elif name == "put_down":
        # reaches the table at u = 0.75 and rests there
        y = Y_HIGH + (Y_REST - Y_HIGH) * _smooth(u, 0.0, 0.75)
    elif name == "open":
        lid = 0.7 * _smooth(u, 0.1, 0.9)
    elif name == "close":
        lid = 0.7 * (1 - _smooth(u, 0.1, 0.9))
    elif name == "push":
        y = Y_REST - 0.03
        x = a.x0 + a.direction * 0.16 * (2 * _smooth(u, 0.05, 0.95) - 1)
    elif name == "pull":
        k = _smooth(u, 0.05, 0.95)
        y = -0.1 + 0.28 * k
        sx = sy = 0.75 + 0.55 * k
    elif name == "turn":
        angle = a.direction * math.pi * _smooth(u, 0.05, 0.95)
    elif name == "shake":
        # two full cycles: the middles of the clip's four quarters land on alternating extremes
        x = a.x0 + a.direction * 0.13 * math.sin(4 * math.pi * u)
    elif name == "cut":
        cut = u >= 0.1
        split = 0.45 * _smooth(u, 0.3, 0.9)
    elif name == "squeeze":
        k = _smooth(u, 0.1, 0.9)
        sx, sy = 1 - 0.5 * k, 1 + 0.15 * k
    return x, y, angle, sx, sy, lid, split, cut


def object_pose(a: Action, scene: Scene, t: float, width: int, height: int) -> ObjectPose | None:
    """The pose of action `a`'s object at video time t in frame pixels, or None when it is out of view."""
    if not a.visible_start <= t <= a.visible_end:
        return None
    if t < a.start:  # entering from below the frame
        x, y, angle, sx, sy, lid, split, cut = _action_state(a, 0.0)
        k = 1 - _smooth((t - a.visible_start) / ENTER)
    elif t > a.end:  # leaving downwards
        x, y, angle, sx, sy, lid, split, cut = _action_state(a, 1.0)
        k = _smooth((t - a.end) / ENTER)
    else:
        x, y, angle, sx, sy, lid, split, cut = _action_state(a, (t - a.start) / (a.end - a.start))
        k = 0.0
    off_screen = 0.5 + RADIUS * a.scale * max(sx, sy) * 1.6 + 0.05
    y = y + (off_screen - y) * k
    return place_object(a.noun, a.scale, x, y, (angle, sx, sy, lid, split, cut), scene, t, (width, height))


def place_object(
    noun: int, scale: float, x: float, y: float, look: tuple, scene: Scene, t: float, size: tuple[int, int]
) -> ObjectPose:
    """Noun `noun` at table position (x, y) (frame heights from the centre) in a (width, height) frame
    at time t, camera motion included; `look` is the rest of ObjectPose (angle, sx, sy, lid, split, cut)."""
    width, height = size
    dx, dy = camera_offset(scene, t, height)
    cx, cy = width / 2 + x * height - dx, height / 2 + y * height - dy
    return ObjectPose(NOUNS[noun].shape, cx, cy, RADIUS * scale * height, *look)


def active_action(plan: VideoPlan, t: float) -> Action | None:
    """The action whose object is in view at time t (at most one: visits never overlap)."""
    for a in plan.actions:
        if a.visible_start <= t <= a.visible_end:
            return a
    return None

"""Object state changes of the synthetic world: videos and `fho_oscc-pnr_{train,val}.json` (docs/design.md C.7).

Videos of their own (`videos/{video_uid}.mp4`, beside the narrated world's, with uids that never
collide), so the EgoClip / EgoMCQ / NLQ / MQ / VQ2D files and their videos stay exactly as they were. Each FHO video is a row of 8 s
episodes. In an episode one object is held in view for the whole window while the hand moves it
(sway, lift, slide or turn) and, once, squeezes it briefly (a jolt). In half the episodes the object
changes state at that jolt, the point of no return (PNR): its lid comes off (showing its contents),
it breaks in two (showing its inside), it fills, or it changes colour, and it stays that way to the end of the window. In the other half the
same objects and hand motions appear, jolt included, and nothing changes; a quarter of those show
the object in its changed look from the start, so "changed at the end" alone does not tell the
classes apart.

Every clip of the annotation files is one episode's window; each video holds two episodes of each
class, so both classes appear in every split.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

import numpy as np

from egovlp.synth import geometry as geo
from egovlp.synth.world import (
    CLIP_MARGIN,
    COLOURS,
    FPS,
    NOUNS,
    RADIUS,
    ObjectPose,
    Scene,
    _make_scene,
    _smooth,
    camera_offset,
    place_object,
    plan_videos,
)

WINDOW_SECONDS = 8.0  # an FHO clip
WINDOW_FRAMES = int(WINDOW_SECONDS * FPS)  # 240: parent_end_frame - parent_start_frame
EPISODES_PER_VIDEO = 4  # two with a state change, two without
ENTER_SECONDS = 0.5  # the object comes into view before its window and leaves after it
GAP_SECONDS = 0.3
PNR_RANGE = (0.5, 7.5)  # where in the window the jolt (and the PNR) falls, seconds
CHANGE_SECONDS = 0.1  # the change completes at the PNR frame, starting this long before it
PRE_CHANGED = 0.25  # share of no-change episodes that show the changed look throughout
CHANGES = ("open", "break", "fill", "recolour")
MOTIONS = ("sway", "lift", "slide", "turn")
VIDEO_FOLDER = "videos"  # shared with the narrated world (docs/design.md: videos/{video_uid}.mp4)
UID_NAMESPACE = uuid.UUID("0b7e4f1a-9c62-5d3e-8a41-7f2c6d9e3b15")


@dataclass(frozen=True)
class Episode:
    """One 8 s window: an object held in view, moved, jolted once, and maybe changed at the jolt."""

    index: int  # in the video
    start_frame: int  # parent frame of the window start (30 fps)
    noun: int
    change: str  # what would change: CHANGES
    state_change: bool
    pnr_frame: int  # parent frame of the jolt; the PNR when state_change
    pre_changed: bool  # (no change only) shows the changed look from the start
    new_colour: str  # recolour: the colour it turns; otherwise the colour of what shows inside
    motion: str
    x0: float
    y0: float
    scale: float
    direction: int
    hand: int

    @property
    def start(self) -> float:
        return self.start_frame / FPS

    @property
    def end(self) -> float:
        return (self.start_frame + WINDOW_FRAMES) / FPS


@dataclass(frozen=True)
class FHOVideoPlan:
    video_uid: str
    index: int
    split: str
    duration: float
    scene: Scene
    episodes: tuple[Episode, ...]


def video_duration() -> float:
    """Seconds of one FHO video: the Ego4D clip margin, then the episodes with their entries and exits."""
    per_episode = 2 * ENTER_SECONDS + WINDOW_SECONDS + GAP_SECONDS
    return round(2 * CLIP_MARGIN + EPISODES_PER_VIDEO * per_episode, 3)


def _far_colour(rng: np.random.Generator, colour: str) -> str:
    """A colour clearly unlike `colour` (RGB distance over 180), drawn at random."""
    rgb = np.float32(COLOURS[colour])
    far = [c for c, v in COLOURS.items() if float(np.linalg.norm(np.float32(v) - rgb)) > 180]
    return far[int(rng.integers(len(far)))]


def _make_episodes(rng: np.random.Generator) -> list[Episode]:
    classes = rng.permutation([True, True, False, False][:EPISODES_PER_VIDEO]).tolist()
    nouns = rng.choice(len(NOUNS), size=EPISODES_PER_VIDEO, replace=False).tolist()
    episodes = []
    t = CLIP_MARGIN + ENTER_SECONDS + GAP_SECONDS
    for i in range(EPISODES_PER_VIDEO):
        start_frame = int(round(t * FPS))
        pnr = int(rng.integers(int(PNR_RANGE[0] * FPS), int(PNR_RANGE[1] * FPS) + 1))
        change = CHANGES[int(rng.integers(len(CHANGES)))]
        state_change = bool(classes[i])
        episodes.append(
            Episode(
                index=i,
                start_frame=start_frame,
                noun=int(nouns[i]),
                change=change,
                state_change=state_change,
                pnr_frame=start_frame + pnr,
                pre_changed=not state_change and bool(rng.random() < PRE_CHANGED),
                new_colour=_far_colour(rng, NOUNS[int(nouns[i])].colour),
                motion=MOTIONS[int(rng.integers(len(MOTIONS)))],
                x0=round(float(rng.uniform(-0.06, 0.06)), 4),
                y0=round(float(rng.uniform(-0.03, 0.04)), 4),
                scale=round(float(rng.uniform(1.4, 1.6)), 4),  # larger than the narrated world's
                direction=int(rng.choice([-1, 1])),
                hand=int(rng.choice([-1, 1])),
            )
        )
        t = start_frame / FPS + WINDOW_SECONDS + 2 * ENTER_SECONDS + GAP_SECONDS
    return episodes


def make_fho_world(n_videos: int, seed: int, n_val: int) -> list[FHOVideoPlan]:
    """Plans of `n_videos` FHO videos, `n_val` of them (chosen at random) in the val split.

    Streams of their own (spawn keys 7 and 8), so the narrated world's plans do not change.
    """
    duration = video_duration()

    def plan(rng: np.random.Generator, video_uid: str, index: int, split: str) -> FHOVideoPlan:
        scene = _make_scene(rng, duration)
        return FHOVideoPlan(video_uid, index, split, duration, scene, tuple(_make_episodes(rng)))

    return plan_videos(n_videos, seed, n_val, (7, 8), plan)


# ------------------------------------------------------------------------------------------------
# what is seen at time t


@dataclass(frozen=True)
class Look:
    """The object in one frame: its pose and colour, and how much of its inside shows (0..1).

    What shows inside is in `inner_rgb`: the liquid of a fill, the contents of an opened object,
    the inner faces of a broken one, so every change is also a change of colour.
    """

    pose: ObjectPose
    rgb: tuple[int, int, int]
    change: str
    inside: float
    inner_rgb: tuple[int, int, int]


def changed_fraction(ep: Episode, t: float, force: bool | None = None) -> float:
    """0 before the change, 1 from the PNR frame on (a short ramp just before it).

    `force` renders the episode as if it had (True) or had not (False) a state change.
    """
    if ep.pre_changed and force is None:
        return 1.0
    if not (ep.state_change if force is None else force):
        return 0.0
    pnr = ep.pnr_frame / FPS
    return _smooth(t, pnr - CHANGE_SECONDS, pnr)


def _motion(ep: Episode, u: float) -> tuple[float, float, float]:
    """(x, y, angle) at window phase u in [0, 1]: the hand's slow motion over the window."""
    x, y, angle = ep.x0, ep.y0, 0.0
    if ep.motion == "sway":
        x += ep.direction * 0.06 * math.sin(3 * math.pi * u)
    elif ep.motion == "lift":
        y -= 0.12 * math.sin(math.pi * u)
    elif ep.motion == "slide":
        x += ep.direction * 0.1 * (2 * u - 1)
    elif ep.motion == "turn":
        angle = ep.direction * 0.5 * math.pi * u
    return x, y, angle


def episode_look(
    ep: Episode, scene: Scene, t: float, width: int, height: int, force: bool | None = None
) -> Look | None:
    """The object of episode `ep` at video time t in frame pixels, or None when it is out of view."""
    if not ep.start - ENTER_SECONDS <= t <= ep.end + ENTER_SECONDS:
        return None
    u = min(max((t - ep.start) / WINDOW_SECONDS, 0.0), 1.0)
    x, y, angle = _motion(ep, u)
    # the jolt: the hand presses the object down and squeezes it for a fifth of a second
    jolt = max(0.0, 1 - abs(t - ep.pnr_frame / FPS) / 0.1)
    y += 0.025 * jolt
    sx, sy = 1 - 0.12 * jolt, 1 + 0.04 * jolt
    # entering from below before the window, leaving downwards after it
    if t < ep.start:
        k = 1 - _smooth((t - ep.start + ENTER_SECONDS) / ENTER_SECONDS)
    elif t > ep.end:
        k = _smooth((t - ep.end) / ENTER_SECONDS)
    else:
        k = 0.0
    off_screen = 0.5 + RADIUS * ep.scale * 1.8 + 0.05
    y += (off_screen - y) * k
    c = changed_fraction(ep, t, force)
    lid = 1.0 * c if ep.change == "open" else 0.0
    split = 0.6 * c if ep.change == "break" else 0.0
    cut = ep.change == "break" and c > 0
    pose = place_object(ep.noun, ep.scale, x, y, (angle, sx, sy, lid, split, cut), scene, t, (width, height))
    rgb = NOUNS[ep.noun].rgb
    if ep.change == "recolour":
        new = COLOURS[ep.new_colour]
        rgb = tuple(int(round(a + (b - a) * c)) for a, b in zip(rgb, new, strict=True))
    inside = c if ep.change in ("fill", "open", "break") else 0.0
    return Look(pose, rgb, ep.change, inside, COLOURS[ep.new_colour])


def active_episode(plan: FHOVideoPlan, t: float) -> Episode | None:
    for ep in plan.episodes:
        if ep.start - ENTER_SECONDS <= t <= ep.end + ENTER_SECONDS:
            return ep
    return None


def inside_alpha(look: Look, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """[h, w] coverage of what shows inside the object (inset 1.5 px from its outline).

    fill: the liquid up to 80% of the height; open: the contents, a band below the lifted lid;
    break: the inner faces along both sides of the break.
    """
    pose = look.pose
    u, v = geo.object_local(pose, xs, ys)
    d = geo.object_sdf(pose, u, v)  # [h, w] pixels
    top, bottom = geo.V_EXTENT[pose.shape]
    px = pose.radius * min(pose.sx, pose.sy)  # pixels per unit of u, v
    if look.change == "fill":
        line = bottom - 0.8 * look.inside * (bottom - top)  # v of the surface (v grows downwards)
        region = (v - line) * px
    elif look.change == "open":
        lid_v = top + (bottom - top) / 3
        region = np.minimum(v - lid_v, lid_v + 0.4 * (bottom - top) - v) * px
    else:  # break: within 0.3 radius of each cut face
        region = (0.3 - np.abs(np.abs(u) - pose.split)) * px
    return np.clip(0.5 - (d + 1.5), 0, 1) * np.clip(0.5 + region, 0, 1) * min(look.inside, 1.0)


# ------------------------------------------------------------------------------------------------
# pixels


def render_fho_frame(plan: FHOVideoPlan, t: float, bg, force: bool | None = None) -> np.ndarray:
    """The FHO video's frame at time t: uint8 [H, W, 3] RGB (the narrated world's renderer pieces)."""
    from egovlp.synth import render

    j, width, height, gain = bg.margin, bg.width, bg.height, bg.gain
    dx, dy = camera_offset(plan.scene, t, height)
    frame = bg.canvas[j + dy : j + dy + height, j + dx : j + dx + width].copy()  # [H, W, 3]
    ep = active_episode(plan, t)
    look = None if ep is None else episode_look(ep, plan.scene, t, width, height, force)
    if look is not None:
        origin = (j + dx, j + dy)
        render._draw_object(frame, look.pose, look.rgb, gain, origin)
        if look.inside > 0:
            _draw_inside(frame, look, gain, origin)
        render._draw_hand(frame, look.pose, ep.hand, plan.scene, gain, origin)
    for t0, t1, length, axis in plan.scene.blur:
        if t0 <= t <= t1:
            frame = render._box_blur(frame, max(2, round(length * height)), axis)
    return frame


def _draw_inside(frame: np.ndarray, look: Look, gain: np.ndarray, origin: tuple[int, int]) -> None:
    from egovlp.synth import render

    height, width = frame.shape[:2]
    e = geo.object_extent(look.pose)
    x0, y0, x1, y1 = win = geo.region(look.pose.cx, look.pose.cy, e, e, width, height)
    if x1 <= x0 or y1 <= y0:
        return
    alpha = inside_alpha(look, *geo.grid(*win))  # [h, w]
    ox, oy = origin
    g = gain[y0 + oy : y1 + oy, x0 + ox : x1 + ox]
    render._composite(frame, win, alpha, np.float32(look.inner_rgb) * 0.9 * g[..., None])


__all__ = [
    "VIDEO_FOLDER",
    "WINDOW_SECONDS",
    "Episode",
    "FHOVideoPlan",
    "Look",
    "active_episode",
    "episode_look",
    "make_fho_world",
    "render_fho_frame",
]

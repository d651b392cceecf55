"""Frames of the synthetic world (numpy, vectorized) and their H.264 encoding with PyAV.

A video is a static, lit background canvas slightly larger than the frame (the camera jitter picks a
window of it), over which each frame composites the one object in view and the hand holding it,
then occasionally a motion blur. Only the small windows around the object and the hand are touched
per frame, which keeps rendering well below the encoder's cost.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from egovlp.io import atomic_path
from egovlp.synth import geometry as geo
from egovlp.synth.world import (
    FPS,
    NOUNS,
    ObjectPose,
    Scene,
    VideoPlan,
    active_action,
    camera_offset,
    frame_size,
    jitter_pixels,
    object_pose,
)

log = logging.getLogger(__name__)

# x264 settings: crf 23 as usual; "veryfast" because the default dataset must render and encode in
# well under 90 s on one core (slower presets buy little on these flat pictures)
X264_OPTIONS = {"crf": "23", "preset": "veryfast"}
# draws one RGB frame of a plan at time t over its background
FrameFn = Callable[[Any, float, "Background"], np.ndarray]
GOP = 30  # one keyframe a second keeps clip seeks cheap for the shard writer


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] bilinear interpolation weights (align-corners off)."""
    p = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.floor(p).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (p - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), i0] += 1 - w
    m[np.arange(n_out), i1] += w
    return m


def _smooth_noise(rng: np.random.Generator, gh: int, gw: int, h: int, w: int) -> np.ndarray:
    """[h, w] low-frequency noise in about [-1, 1]: a random gh x gw grid, bilinearly upsampled."""
    g = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    return _interp_matrix(h, gh) @ g @ _interp_matrix(w, gw).T


@dataclass(frozen=True)
class Background:
    canvas: np.ndarray  # uint8 [H + 2j, W + 2j, 3], already lit
    gain: np.ndarray  # float32 [H + 2j, W + 2j]: the lighting, applied to objects too
    width: int  # frame size
    height: int
    margin: int  # j: the largest camera shift


def make_background(scene: Scene, width: int, height: int) -> Background:
    """The lit background canvas of a scene for frames of width x height.

    The canvas is `jitter_pixels` larger than the frame on each side; pattern sizes are in units of
    the short side, so a scene looks the same at every resolution.
    """
    s = height
    j = jitter_pixels(s)
    hc, wc = height + 2 * j, width + 2 * j
    rng = np.random.default_rng(scene.texture_seed)
    # S units from the nominal frame centre
    ys = ((np.arange(hc, dtype=np.float32) - j + 0.5 - height / 2) / s)[:, None]
    xs = ((np.arange(wc, dtype=np.float32) - j + 0.5 - width / 2) / s)[None, :]
    table = ys >= scene.horizon  # [hc, 1]
    base = np.where(table[..., None], np.float32(scene.table_rgb), np.float32(scene.wall_rgb))  # [hc, 1, 3]
    base = np.broadcast_to(base, (hc, wc, 3)).copy()
    shade = 1 + 0.1 * _smooth_noise(rng, 5, 7, hc, wc)  # [hc, wc] blotches
    if scene.texture == "wood":
        grain = 0.15 * _smooth_noise(rng, 4, 6, hc, wc)
        stripes = np.sin(2 * np.pi * (ys * rng.uniform(7, 14) + xs * rng.uniform(-1, 1) + grain))
        shade = shade + np.where(table, 0.06 * stripes, 0)
    elif scene.texture == "tiles":
        k = rng.uniform(5, 9)
        lines = (np.mod(xs * k, 1) < 0.06) | (np.mod((ys - scene.horizon) * k, 1) < 0.06)
        shade = shade * np.where(table & lines, 0.78, 1.0)
    elif scene.texture == "speckle":
        shade = shade + np.where(table, rng.normal(0, 0.04, (hc, wc)), 0).astype(np.float32)
    # a soft shadow along the back edge of the table
    edge = np.exp(-(((ys - scene.horizon) / 0.03) ** 2)) * table
    shade = shade * (1 - 0.25 * edge)
    gain = (
        1 + scene.light_strength * (math.cos(scene.light_angle) * xs + math.sin(scene.light_angle) * ys) / 0.6
    )
    gain = np.clip(np.broadcast_to(gain, (hc, wc)), 0.6, 1.4).astype(np.float32)
    canvas = base * (shade * gain)[..., None] * 255
    return Background(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), gain, width, height, j)


def _composite(frame: np.ndarray, win: tuple[int, ...], alpha: np.ndarray, colour: np.ndarray) -> None:
    """Blend colour [h, w, 3] (0..255 floats) into frame[win] with alpha [h, w], in place."""
    x0, y0, x1, y1 = win
    reg = frame[y0:y1, x0:x1].astype(np.float32)
    reg += (colour - reg) * alpha[..., None]
    frame[y0:y1, x0:x1] = np.clip(reg + 0.5, 0, 255).astype(np.uint8)


def _box_blur(frame: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Motion blur: a k-pixel box filter along one axis (running sums, no loops)."""
    pad = [(0, 0)] * 3
    pad[axis] = (k // 2 + 1, k - 1 - k // 2)
    c = np.cumsum(np.pad(frame.astype(np.float32), pad, mode="edge"), axis=axis)
    n = frame.shape[axis]
    hi = np.take(c, np.arange(k, k + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return np.clip((hi - lo) / k + 0.5, 0, 255).astype(np.uint8)


def render_frame(plan: VideoPlan, t: float, bg: Background) -> np.ndarray:
    """The frame at video time t: uint8 [H, W, 3] RGB."""
    j, width, height, gain = bg.margin, bg.width, bg.height, bg.gain
    s = height
    dx, dy = camera_offset(plan.scene, t, s)
    frame = bg.canvas[j + dy : j + dy + height, j + dx : j + dx + width].copy()  # [H, W, 3]
    action = active_action(plan, t)
    if action is not None:
        pose = object_pose(action, plan.scene, t, width, height)
        if pose is not None:
            _draw_object(frame, pose, NOUNS[action.noun].rgb, gain, (j + dx, j + dy))
            _draw_hand(frame, pose, action.hand, plan.scene, gain, (j + dx, j + dy))
    for t0, t1, length, axis in plan.scene.blur:
        if t0 <= t <= t1:
            frame = _box_blur(frame, max(2, round(length * s)), axis)
    return frame


def _draw_object(
    frame: np.ndarray, pose: ObjectPose, rgb: tuple[int, int, int], gain: np.ndarray, origin: tuple[int, int]
) -> None:
    """Paint the object into frame [H, W, 3] in place; origin = the frame's corner in the canvas."""
    height, width = frame.shape[:2]
    e = geo.object_extent(pose)
    win = geo.region(pose.cx, pose.cy, e, e, width, height)
    x0, y0, x1, y1 = win
    if x1 <= x0 or y1 <= y0:
        return
    xs, ys = geo.grid(*win)
    u, v = geo.object_local(pose, xs, ys)
    d = geo.object_sdf(pose, u, v)  # [h, w] pixels
    alpha = np.clip(0.5 - d, 0, 1)
    # dark outline, a light-to-dark vertical shading, a darker cap (shows rotation), the cut line
    shade = (0.65 + 0.35 * np.clip(-d / 2, 0, 1)) * (1.08 - 0.06 * np.clip(v + 1, 0, 2))
    shade = shade * np.where(np.abs(u) - pose.split > geo.CAP_U, np.where(u > 0, 0.55, 1.0), 1.0)
    if pose.cut:
        shade = shade * np.where(np.abs(u) < 0.05, 0.3, 1.0)
    ox, oy = origin
    g = gain[y0 + oy : y1 + oy, x0 + ox : x1 + ox]  # the scene's lighting at these pixels
    colour = np.float32(rgb) * (shade * g)[..., None]
    _composite(frame, win, alpha, colour)


@functools.lru_cache(maxsize=32)
def _hand_sprite(offset: tuple[int, int], side: int, short_side: int, skin: tuple) -> tuple:
    """(alpha [h, w], colour [h, w, 3] before lighting, x0, y0) of the hand around its palm.

    The hand only translates with the object except when the object is squeezed or grows, so the
    sprite is computed once per (palm offset, side) and moved by whole pixels.
    """
    d, x0, y0 = geo.hand_sdf(offset, side, short_side)
    alpha = np.clip(0.5 - d, 0, 1)
    colour = np.float32(skin) * 255 * (0.8 + 0.2 * np.clip(-d / 3, 0, 1))[..., None]
    return alpha, colour, x0, y0


def _draw_hand(
    frame: np.ndarray, pose: ObjectPose, side: int, scene: Scene, gain: np.ndarray, origin: tuple[int, int]
) -> None:
    """Paint the hand holding the object (over it: it may occlude part of it)."""
    height, width = frame.shape[:2]
    offset = geo.hand_offset(pose, side)
    alpha, colour, sx0, sy0 = _hand_sprite(offset, side, height, scene.skin_rgb)
    # the palm's pixel in the frame, and the part of the sprite that falls inside the frame
    px, py = int(math.floor(pose.cx)) + offset[0], int(math.floor(pose.cy)) + offset[1]
    x0, y0 = max(0, px + sx0), max(0, py + sy0)
    x1, y1 = min(width, px + sx0 + alpha.shape[1]), min(height, py + sy0 + alpha.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - py - sy0 : y1 - py - sy0, x0 - px - sx0 : x1 - px - sx0]
    c = colour[y0 - py - sy0 : y1 - py - sy0, x0 - px - sx0 : x1 - px - sx0]
    ox, oy = origin
    g = gain[y0 + oy : y1 + oy, x0 + ox : x1 + ox]
    _composite(frame, (x0, y0, x1, y1), a, c * g[..., None])


def render_video(plan: Any, path: Path, short_side: int, frame_fn: FrameFn = render_frame) -> int:
    """Render and encode one video to `path` (H.264 mp4, 30 fps, yuv420p); returns the frame count.

    `frame_fn(plan, t, background)` draws the frame at time t: `render_frame` for a narrated video
    (the default), `egovlp.synth.fho.render_fho_frame` for a state-change one.
    """
    width, height = frame_size(short_side)
    bg = make_background(plan.scene, width, height)
    n_frames = int(round(plan.duration * FPS))
    encode_video(path, n_frames, width, height, lambda i: frame_fn(plan, i / FPS, bg))
    return n_frames


def encode_video(
    path: Path, n_frames: int, width: int, height: int, frame_at: Callable[[int], np.ndarray]
) -> None:
    """Encode frames `frame_at(i)` (uint8 [H, W, 3]) for i in 0..n_frames-1 to `path` at 30 fps.

    Written through `egovlp.io.atomic_path`, so a killed run leaves no half file under the real name.
    """
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS, options=dict(X264_OPTIONS))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = GOP
        stream.thread_count = 1  # parallelism is one process per video
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_at(i), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    log.debug("wrote %s (%d frames)", path, n_frames)

"""Shapes of the synthetic world as signed distance fields, and the pixel masks and boxes they give.

The renderer paints with these fields and the VQ2D writer takes its boxes from them, so a box in
`vq_*.json` is exactly the rendered object's extent. All functions are vectorized over a pixel grid:
`xs` is a [1, w] row and `ys` a [h, 1] column of pixel-centre coordinates, results are [h, w].
Distances are negative inside a shape.
"""

from __future__ import annotations

import math

import numpy as np

from egovlp.synth.world import ObjectPose

# vertical extent (top, bottom) of each unit shape: the lid (open / close) is its top third
V_EXTENT = {
    "disk": (-0.95, 0.95),
    "box": (-0.7, 0.7),
    "tall": (-1.0, 1.0),
    "bar": (-0.36, 0.36),
    "triangle": (-0.95, 0.75),
    "ring": (-0.97, 0.97),
    "cross": (-0.95, 0.95),
    "diamond": (-1.0, 1.0),
    "half": (-0.45, 0.5),
    "trapezoid": (-0.8, 0.8),
    "star": (-0.95, 0.8),
}
CAP_U = 0.45  # the darker cap that makes rotation visible: the part right of this line


def _box(u: np.ndarray, v: np.ndarray, bu: float, bv: float) -> np.ndarray:
    qu, qv = np.abs(u) - bu, np.abs(v) - bv
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0)


def _ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    # not an exact distance, but exact on the boundary and monotone, which is all alpha needs
    return (np.hypot(u / a, v / b) - 1) * min(a, b)


def _unit_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Distance field of a shape that fits the square [-1, 1]^2 (units of the object radius)."""
    if shape == "disk":
        return np.hypot(u, v) - 0.95
    if shape == "box":
        return _box(u, v, 0.85, 0.7)
    if shape == "tall":
        return _ellipse(u, v, 0.5, 1.0)
    if shape == "bar":
        return _box(u, v, 1.0, 0.3) - 0.06
    if shape == "triangle":  # pointing up
        side = np.abs(u) * 0.873 - v * 0.488 - 0.464  # unit normal of the edge apex -> base corner
        return np.maximum(side, v - 0.75)
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.7) - 0.27
    if shape == "cross":
        return np.minimum(_box(u, v, 0.95, 0.27), _box(u, v, 0.27, 0.95))
    if shape == "diamond":
        return (np.abs(u) * 1.0 + np.abs(v) * 0.8 - 0.8) / math.hypot(1.0, 0.8)
    if shape == "half":  # a bowl: the lower half of a disk, centred
        w = v + 0.45
        return np.maximum(np.hypot(u, w) - 0.95, -w)
    if shape == "trapezoid":  # a cup: wider at the top
        side = (np.abs(u) - (0.625 - 0.156 * v)) / math.hypot(1.0, 0.156)
        return np.maximum(side, np.abs(v) - 0.8)
    if shape == "star":  # five points, one up
        theta = np.arctan2(u, -v)
        return (np.hypot(u, v) - (0.62 + 0.33 * np.cos(5 * theta))) * 0.6
    raise ValueError(f"unknown shape {shape!r}")


def object_local(pose: ObjectPose, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel grid -> the object's own (u, v) coordinates: rotated, in radius units, squeeze undone."""
    dx, dy = xs - pose.cx, ys - pose.cy
    c, s = math.cos(pose.angle), math.sin(pose.angle)
    u = (c * dx + s * dy) / (pose.radius * pose.sx)
    v = (-s * dx + c * dy) / (pose.radius * pose.sy)
    return u, v


def object_sdf(pose: ObjectPose, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Distance to the object in pixels (approximately), given its local coordinates."""

    def body(uu: np.ndarray) -> np.ndarray:
        d = _unit_sdf(pose.shape, uu, v)
        if pose.lid <= 0:
            return d
        top, bottom = V_EXTENT[pose.shape]
        lid_v = top + (bottom - top) / 3
        lower = np.maximum(d, lid_v - v)  # the part below the lid line stays
        vv = v + pose.lid
        upper = np.maximum(_unit_sdf(pose.shape, uu, vv), vv - lid_v)  # the lid, lifted by `lid`
        return np.minimum(lower, upper)

    if pose.split <= 0:
        d = body(u)
    else:  # the two halves of a cut, each moved `split` away from the cut line
        left, right = u + pose.split, u - pose.split
        d = np.minimum(np.maximum(body(left), left), np.maximum(body(right), -right))
    return d * pose.radius * min(pose.sx, pose.sy)


def object_extent(pose: ObjectPose) -> float:
    """A radius in pixels around (cx, cy) that contains the whole object in any state."""
    return pose.radius * max(pose.sx, pose.sy) * (1.15 + pose.split + pose.lid) + 2


def region(cx: float, cy: float, half_w: float, half_h: float, width: int, height: int) -> tuple[int, ...]:
    """Integer pixel window (x0, y0, x1, y1) around a point, clipped to the frame (may be empty)."""
    x0 = max(0, int(math.floor(cx - half_w)))
    y0 = max(0, int(math.floor(cy - half_h)))
    x1 = min(width, int(math.ceil(cx + half_w)) + 1)
    y1 = min(height, int(math.ceil(cy + half_h)) + 1)
    return x0, y0, max(x0, x1), max(y0, y1)


def grid(x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a window: xs [1, w], ys [h, 1]."""
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5)[None, :]
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5)[:, None]
    return xs, ys


def object_box(pose: ObjectPose, width: int, height: int) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the object's visible pixels (alpha >= 0.5) in the frame, or None."""
    e = object_extent(pose)
    x0, y0, x1, y1 = region(pose.cx, pose.cy, e, e, width, height)
    if x1 <= x0 or y1 <= y0:
        return None
    xs, ys = grid(x0, y0, x1, y1)
    inside = object_sdf(pose, *object_local(pose, xs, ys)) <= 0  # [h, w]
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if rows.size == 0:
        return None
    return (x0 + int(cols[0]), y0 + int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def _capsule(xs: np.ndarray, ys: np.ndarray, a: tuple[float, float], b: tuple[float, float], r: float):
    """Distance to the segment a-b thickened by r (pixels)."""
    bax, bay = b[0] - a[0], b[1] - a[1]
    pax, pay = xs - a[0], ys - a[1]
    h = np.clip((pax * bax + pay * bay) / max(bax * bax + bay * bay, 1e-9), 0, 1)
    return np.hypot(pax - bax * h, pay - bay * h) - r


def hand_offset(pose: ObjectPose, side: int) -> tuple[int, int]:
    """Where the palm is relative to the object's centre (whole pixels): below it, to the hand's side."""
    return round(side * 0.62 * pose.radius * pose.sx), round(0.72 * pose.radius * pose.sy)


def hand_sdf(offset: tuple[int, int], side: int, short_side: int) -> tuple[np.ndarray, int, int]:
    """The hand as a distance field around its palm: (sdf [h, w] in pixels, x0, y0).

    Pixel (i, j) of the field lies at (x0 + j, y0 + i) pixels from the palm's pixel. The forearm runs
    from the palm down and outwards for a whole short side, so it always leaves the frame at the
    bottom; three fingers reach from the palm towards the object's centre (at -offset).
    """
    s = short_side
    arm = (side * 0.3 * s, 1.0 * s)
    base = math.atan2(-offset[1], -offset[0])
    tips = [(0.11 * s * math.cos(base + da), 0.11 * s * math.sin(base + da)) for da in (-0.45, 0.0, 0.45)]
    pad = 0.1 * s
    pts = [(0.0, 0.0), arm, *tips]
    x0 = math.floor(min(p[0] for p in pts) - pad)
    x1 = math.ceil(max(p[0] for p in pts) + pad)
    y0 = math.floor(min(p[1] for p in pts) - pad)
    y1 = math.ceil(max(p[1] for p in pts) + pad)
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    d = _ellipse(xs, ys, 0.085 * s, 0.07 * s)  # the palm
    d = np.minimum(d, _capsule(xs, ys, (0.0, 0.0), arm, 0.055 * s))
    for tip in tips:
        d = np.minimum(d, _capsule(xs, ys, (0.0, 0.0), tip, 0.021 * s))
    return d, x0, y0

"""The one 1-D IoU of the heads and their metrics, and the box overlap of the metrics.

`segment_iou` serves the NLQ and MQ metrics (seconds, the official continuous definition) and the
VQ2D temporal IoU (integer rows / frames with the inclusive convention of docs/design.md
C.4, where a segment [s, e] covers e - s + 1 units), and MQ Soft-NMS. It takes numpy arrays (the
metrics, which start without torch) or torch tensors (the heads) and broadcasts, so one call gives a
pairwise matrix (`a[:, None]`, `b[None]`) or element-wise pairs.

The heads' box IoU is `torchvision.ops.box_iou`; the metrics compute their box overlaps here in numpy
(float64, identical arithmetic) so that `egovlp eval` does not pay for importing torch.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    return torch is not None and torch.is_tensor(x)


def segment_iou(a: Any, b: Any, inclusive: bool = False) -> Any:
    """IoU of segments a [..., 2] and b [..., 2] (start, end; broadcast) -> [...].

    inclusive: integer frames or rows, a segment [s, e] covering e - s + 1 of them (the VQ2D tIoU of
    C.4); otherwise continuous times (NLQ C.2, MQ C.3). An empty union gives 0.
    """
    one = 1 if inclusive else 0
    if _is_tensor(a) or _is_tensor(b):
        import torch

        lo, hi = torch.maximum(a[..., 0], b[..., 0]), torch.minimum(a[..., 1], b[..., 1])
        inter = (hi - lo + one).clamp_min(0)
        union = (a[..., 1] - a[..., 0] + one) + (b[..., 1] - b[..., 0] + one) - inter
        return torch.where(union > 0, inter / union, 0.0)
    a, b = np.asarray(a), np.asarray(b)
    lo, hi = np.maximum(a[..., 0], b[..., 0]), np.minimum(a[..., 1], b[..., 1])
    inter = (hi - lo + one).clip(min=0).astype(np.float64)
    union = (a[..., 1] - a[..., 0] + one) + (b[..., 1] - b[..., 0] + one) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of boxes a [..., 4] and b [..., 4] (x1, y1, x2, y2; broadcast) -> [...]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    w = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(min=0)
    h = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(min=0)
    return w * h


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas (x2 - x1)(y2 - y1) of boxes [..., 4] -> [...]."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [..., 4] and b [..., 4] (broadcast) -> [...]; an empty union gives 0."""
    inter = box_intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

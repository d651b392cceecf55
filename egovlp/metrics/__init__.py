"""The official Ego4D metrics (NLQ, MQ, VQ2D, FHO OSCC / PNR) and the EgoMask grounding metrics, as pure
functions.

Each function takes parsed JSON (or, for grounding, per-frame masks) and returns the dict that
`egovlp eval TASK` prints (docs/design.md C.5). Malformed input raises `egovlp.errors.InputError`.
"""

from egovlp.metrics.fho import oscc_metrics, pnr_metrics
from egovlp.metrics.grounding import egomask_metrics, grounding_file_metrics, grounding_metrics
from egovlp.metrics.mq import mq_metrics
from egovlp.metrics.nlq import nlq_metrics
from egovlp.metrics.vq2d import vq2d_metrics

__all__ = [
    "egomask_metrics",
    "grounding_file_metrics",
    "grounding_metrics",
    "mq_metrics",
    "nlq_metrics",
    "oscc_metrics",
    "pnr_metrics",
    "vq2d_metrics",
]

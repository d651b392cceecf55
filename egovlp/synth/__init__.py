"""`egovlp synth`: a deterministic synthetic egocentric world written in the real data formats.

Videos of a hand moving coloured objects over a table (H.264 mp4), their EgoClip narrations, EgoMCQ
questions and Ego4D NLQ / MQ / VQ2D annotations, all derived from one timeline per video. It is the
embedded default dataset: small, generated locally, with structure a tiny model can learn.

- `world`: taxonomy (verbs, nouns as colour x shape objects), scenes, timelines, object poses
- `geometry`: shapes as distance fields, masks and boxes
- `render`: frames and encoding
- `annotations`: the annotation file writers
- `cli`: `main(argv)`
"""

from __future__ import annotations

from egovlp.synth.cli import main, synthesize

__all__ = ["main", "synthesize"]

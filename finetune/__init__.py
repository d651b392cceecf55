"""OSCC and PNR: the video tower fine-tuned end to end through accelerate (docs/design.md B.7)."""

"""OSCC and PNR: the video tower fine-tuned end to end through accelerate (DESIGN.md B.7)."""

"""Downstream Ego4D heads (NLQ, MQ, VQ2D) on cached EgoVLP features, and the official metrics."""

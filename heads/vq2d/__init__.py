"""VQ2D head: visual-query localization on cached per-frame feature grids (VQLoC-style, optional PRVQL refinement)."""

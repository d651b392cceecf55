"""Text-to-mask grounding head on cached patch grids and text token features (EgoMask)."""

"""MQ head: ActionFormer-style temporal action detection on cached clip features (optional ASL weighting)."""

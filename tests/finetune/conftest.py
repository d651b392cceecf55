"""A tiny state-change world (2 FHO videos, 8 clips) and a micro model YAML for the finetune tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import micro_config


@pytest.fixture(scope="session")
def fho_world(tmp_path_factory) -> Path:
    from egovlp.synth import synthesize

    root = tmp_path_factory.mktemp("fho_world")
    synthesize(root, videos=2, val_videos=1, duration=8.0, short_side=40, fho_videos=2, workers=2, seed=1)
    cfg = micro_config(num_frames=4).to_dict()
    cfg.pop("name")
    (root / "micro.yaml").write_text(yaml.safe_dump(cfg))
    return root

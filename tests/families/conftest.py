"""Fixtures for the family tests: the tiny released-layout checkpoints (docs/checkpoints.md) and
their converted folders."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TOKENIZER = FIXTURES / "roberta_tokenizer"


def gunzip(name: str, out: Path) -> Path:
    target = out / name.removesuffix(".gz")
    with gzip.open(FIXTURES / name, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


@pytest.fixture(scope="session")
def released(tmp_path_factory) -> dict[str, Path]:
    """family -> its tiny checkpoint in the released layout (`module.` prefix, pickled options)."""
    out = tmp_path_factory.mktemp("released")
    return {"lavila": gunzip("lavila_tiny.pth.gz", out), "egovlpv2": gunzip("egovlpv2_tiny.pth.gz", out)}


@pytest.fixture(scope="session")
def converted(tmp_path_factory, released) -> dict[str, Path]:
    """family -> the folder `egovlp convert` made of it (with --tokenizer for EgoVLPv2)."""
    from egovlp.cli import run

    out = tmp_path_factory.mktemp("converted")
    dirs = {}
    for family, ckpt in released.items():
        args = ["convert", str(ckpt), str(out / family), "--config", str(FIXTURES / f"{family}-tiny.yaml")]
        if family == "egovlpv2":
            args += ["--tokenizer", str(TOKENIZER)]
        assert run(args) == 0
        dirs[family] = out / family
    return dirs

"""Fixtures for the service tests: a micro model on disk, tiny mp4s, a features folder, a ready app."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from serve_testlib import write_features, write_video

import egovlp
from serve.backend import ModelBackend
from tests.conftest import micro_config


@pytest.fixture(scope="session")
def micro_model():
    torch.manual_seed(0)
    return egovlp.create_model(micro_config())


@pytest.fixture(scope="session")
def model_dir(micro_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    micro_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def video_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "a.mp4", color=0)
    write_video(root / "b.mp4", color=1, seconds=2.0)
    return root


@pytest.fixture(scope="session")
def index_dir(micro_model, tmp_path_factory) -> Path:
    """An index over 3 clips of random features plus one row equal to a known text's embedding."""
    from serve.index.cli import build_index

    feats = tmp_path_factory.mktemp("features")
    from egovlp.features import model_identity

    rng = np.random.default_rng(0)
    h = micro_model.cfg.config_hash()
    w = model_identity(micro_model, "micro").weights_hash
    for i in range(3):
        arr = rng.standard_normal((6, 16)).astype(np.float32)
        write_features(feats, f"clip{i}", arr, h, video_uid=f"v{i}", weights_hash=w)
    target = micro_model.encode_text(["#C C opens the fridge"]).numpy()
    arr = np.concatenate([rng.standard_normal((2, 16)), target])
    write_features(feats, "fridge", arr, h, video_uid="vf", weights_hash=w)
    out = tmp_path_factory.mktemp("index")
    build_index(feats, out)
    return out


def wait_ready(client, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("service never became ready")


@pytest.fixture
def make_client(micro_model, index_dir, video_root):
    """make_client(**settings) -> a TestClient on a ready app sharing the session's micro model."""
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.index.store import load_index
    from serve.settings import Settings

    clients = []

    def make(loader=None, wait: bool = True, with_index: bool = True, **overrides):
        settings = Settings(**({"allowed_roots": [str(video_root)], "max_wait_ms": 2.0} | overrides))
        index = load_index(index_dir, use_gpu=False) if with_index else None
        loader = loader or (lambda: ModelBackend(micro_model, index))
        client = TestClient(create_app(settings, loader), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        if wait:
            wait_ready(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)

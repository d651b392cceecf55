"""A bounded load and fault test on loopback: mixed text, video and search at concurrency 64 with
poisoned inputs mixed in. No 5xx, every request gets the status its own input deserves (good ones
200, or 429 with Retry-After when the service sheds load), p50/p99 reported, RSS growth under 10%.
The 60 s version and the --workers 2 comparison are benchmarks/bench_serve.py."""

from __future__ import annotations

import asyncio
import json

import httpx
import psutil
import pytest
from serve_testlib import live_server

from benchmarks.loadtest import GOOD_KINDS, run_load
from serve.backend import ModelBackend

DURATION_S = 10.0


@pytest.fixture
def server_url(micro_model, index_dir, video_root):
    from serve.app import create_app
    from serve.index.store import load_index
    from serve.settings import Settings

    backend = ModelBackend(micro_model, load_index(index_dir, use_gpu=False))
    settings = Settings(allowed_roots=[str(video_root)], max_decodes=2, decode_timeout_s=20)
    app = create_app(settings, backend=backend)
    with live_server(app, log_level="error", backlog=256, timeout_keep_alive=60) as url:
        yield url


def test_mixed_load_with_poison(server_url, capsys):
    proc = psutil.Process()
    asyncio.run(run_load(server_url, "a.mp4", duration_s=2.0, concurrency=64, seed=1))  # warm-up
    rss_before = proc.memory_info().rss
    result = asyncio.run(run_load(server_url, "a.mp4", duration_s=DURATION_S, concurrency=64, seed=2))
    rss_after = proc.memory_info().rss
    summary = result.summary() | {"rss_growth": round(rss_after / rss_before - 1, 4)}
    with capsys.disabled():
        print("\nload:", json.dumps({k: v for k, v in summary.items() if k != "statuses"}))
    assert summary["server_errors_5xx"] == 0 and result.unexpected == [], result.unexpected[:5]
    assert result.transport_errors == 0
    for kind in GOOD_KINDS:  # every good kind got through at least once
        assert result.statuses.get(kind, {}).get(200, 0) >= 1, (kind, result.statuses.get(kind))
    assert summary["p50_ms"] is not None and summary["p99_ms"] >= summary["p50_ms"]
    assert rss_after < 1.10 * rss_before, summary
    assert httpx.get(server_url + "/ready").status_code == 200

"""Schemathesis against the service's own OpenAPI schema (bounded examples): no input may cause a 5xx."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings

from serve.backend import ModelBackend


@pytest.fixture(scope="module")
def api_schema(micro_model, index_dir, video_root):
    from serve.app import Settings, create_app
    from serve.index import load_index

    backend = ModelBackend(micro_model, load_index(index_dir, use_gpu=False))
    app = create_app(
        Settings(allowed_roots=[str(video_root)], max_body_bytes=1 << 20, decode_timeout_s=5), lambda: backend
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if httpx.get(url + "/ready").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    yield schemathesis.openapi.from_url(url + "/openapi.json")
    server.should_exit = True
    thread.join(10)


def test_no_server_errors(api_schema):
    # schemathesis' own pytest plugin does not run under this pytest; drive its strategies directly
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/embeddings", "/v1/video/embeddings", "/v1/search", "/info"}
    seen: list[int] = []

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case):
            response = case.call(timeout=20)
            seen.append(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
            )
            if response.status_code >= 400:
                assert set(response.json()) == {"error", "type"}

        check()
    assert len(seen) >= len(operations) and any(400 <= s < 500 for s in seen)

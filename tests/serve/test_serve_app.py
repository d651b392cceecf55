"""The FastAPI app through TestClient: every endpoint and every error status of the service issue."""

from __future__ import annotations

import base64
import os
import threading
import time

import numpy as np
import pytest
from serve_testlib import write_video

FRIDGE = "#C C opens the fridge"


def _data_url(path, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64," + base64.b64encode(open(path, "rb").read()).decode()


def test_text_embeddings_float_and_base64(make_client, micro_model):
    client = make_client()
    r = client.post("/v1/embeddings", json={"input": [FRIDGE, "a knife"], "model": "micro"})
    assert r.status_code == 200
    body = r.json()
    assert (
        body["object"] == "list" and body["model"] == "micro" and [d["index"] for d in body["data"]] == [0, 1]
    )
    vec = np.array(body["data"][0]["embedding"], np.float32)
    want = micro_model.encode_text([FRIDGE])[0].numpy()
    np.testing.assert_allclose(vec, want / np.linalg.norm(want), atol=1e-5)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 4
    r64 = client.post("/v1/embeddings", json={"input": FRIDGE, "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(r64.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, vec, atol=1e-6)
    raw = client.post("/v1/embeddings", json={"input": FRIDGE, "normalize": False}).json()
    np.testing.assert_allclose(raw["data"][0]["embedding"], want, atol=1e-5)


def test_search_text_returns_metadata(make_client):
    client = make_client()
    r = client.post("/v1/search", json={"query": FRIDGE, "k": 3})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 3
    top = results[0]
    assert top["clip_uid"] == "fridge" and top["video_uid"] == "vf" and top["row"] == 2
    assert top["score"] == pytest.approx(1.0, abs=1e-4)
    assert top["start"] == pytest.approx(2 * 16 / 30) and top["end"] > top["start"]
    assert [h["score"] for h in results] == sorted((h["score"] for h in results), reverse=True)


def test_video_embeddings_all_input_kinds(make_client, video_root):
    client = make_client()
    path = video_root / "a.mp4"
    by_url = client.post(
        "/v1/video/embeddings", json={"input": _data_url(path), "start": 0, "end": 3, "window": 1}
    )
    assert by_url.status_code == 200, by_url.text
    data = by_url.json()["data"]
    assert [(d["start"], d["end"]) for d in data] == [(0, 1), (1, 2), (2, 3)]
    by_path = client.post(
        "/v1/video/embeddings", json={"input": {"path": "a.mp4"}, "start": 0, "end": 3, "window": 1}
    )
    assert by_path.status_code == 200, by_path.text
    np.testing.assert_allclose(by_path.json()["data"][1]["embedding"], data[1]["embedding"], atol=1e-5)
    with open(path, "rb") as fh:
        upload = client.post(
            "/v1/video/embeddings",
            files={"file": ("a.mp4", fh, "video/mp4")},
            data={"start": "1", "end": "2"},
        )
    assert upload.status_code == 200, upload.text
    np.testing.assert_allclose(upload.json()["data"][0]["embedding"], data[1]["embedding"], atol=1e-5)
    search = client.post("/v1/search", json={"video": {"path": str(path)}, "k": 2})
    assert search.status_code == 200 and len(search.json()["results"]) == 2


def test_error_statuses_and_envelope(make_client, video_root, tmp_path):
    client = make_client(max_inputs=4, max_body_bytes=200_000, max_video_seconds=2.5)

    def check(r, status: int, kind: str | None = None):
        assert r.status_code == status, r.text
        body = r.json()
        assert set(body) == {"error", "type"} and isinstance(body["error"], str) and body["error"]
        if kind:
            assert body["type"] == kind

    check(
        client.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}), 422
    )
    check(client.post("/v1/embeddings", json={"input": 3}), 422, "validation_error")
    check(client.post("/v1/embeddings", json={"input": []}), 400, "invalid_request_error")
    check(client.post("/v1/embeddings", json={"input": ["x"] * 5}), 413, "payload_too_large")
    check(client.post("/v1/embeddings", json={"input": "x", "dimensions": 7}), 400)
    check(client.post("/v1/search", json={"k": 3}), 400)
    check(client.post("/v1/search", json={"query": "x", "k": 0}), 422)
    check(client.post("/v1/video/embeddings", content=b"x" * 300_000), 413, "payload_too_large")
    check(client.post("/v1/video/embeddings", content=b"hello", headers={"content-type": "text/plain"}), 415)
    check(client.post("/v1/video/embeddings", json={"input": "data:image/png;base64,AAAA"}), 415)
    garbage = "data:video/mp4;base64," + base64.b64encode(os.urandom(5000)).decode()
    started = time.time()
    check(client.post("/v1/video/embeddings", json={"input": garbage}), 415, "unsupported_media_type")
    assert time.time() - started < 10
    check(client.post("/v1/video/embeddings", json={"input": "not a url"}), 400)
    check(client.post("/v1/video/embeddings", json={"input": {"path": "a.mp4"}, "start": 5}), 400)
    check(client.post("/v1/video/embeddings", json={"input": {"path": "a.mp4"}}), 413)  # 3 s > 2.5 s
    check(client.post("/v1/video/embeddings", json={"input": {"path": "missing.mp4"}}), 404)
    check(client.get("/nope"), 404)
    assert "egovlp_errors_total" in client.get("/metrics").text


def test_path_confinement(make_client, video_root, tmp_path):
    client = make_client()
    outside = write_video(tmp_path / "secret.mp4", seconds=1.0)
    link = video_root / "link.mp4"
    if not link.exists():
        link.symlink_to(outside)
    for raw in [
        "../" + outside.name,
        str(outside),
        str(video_root / ".." / "x.mp4"),
        "link.mp4",
        "/etc/passwd",
    ]:
        r = client.post("/v1/video/embeddings", json={"input": {"path": raw}})
        assert r.status_code == 403 and r.json()["type"] == "permission_error", raw
    closed = make_client(allowed_roots=[])
    r = closed.post("/v1/video/embeddings", json={"input": {"path": "a.mp4"}})
    assert r.status_code == 403 and "disabled" in r.json()["error"]


def test_api_key(make_client):
    client = make_client(api_key="s3cret")
    assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 401
    r = client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["type"] == "authentication_error"
    ok = client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    for route in ("/health", "/ready", "/info", "/metrics"):  # no key needed
        assert client.get(route).status_code == 200


def test_live_before_ready_and_info(make_client, micro_model):
    from serve.backend import ModelBackend

    gate = threading.Event()

    def slow_loader():
        gate.wait(20)
        return ModelBackend(micro_model, None)

    client = make_client(loader=slow_loader, wait=False)
    assert client.get("/health").json() == {"status": "ok", "ready": False}
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["type"] == "not_ready"
    assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 503
    assert client.get("/info").json()["ready"] is False
    gate.set()
    from conftest import wait_ready

    wait_ready(client)
    info = client.get("/info").json()
    assert (
        info["model"] == "micro"
        and info["dim"] == 16
        and info["config_hash"] == micro_model.cfg.config_hash()
    )
    assert info["limits"]["max_queue"] == 64 and info["version"]
    from serve.settings import ServiceLimits

    assert set(info["limits"]) == set(ServiceLimits.model_fields)  # the one definition of the limits
    r = client.post("/v1/search", json={"query": "x"})  # started without an index
    assert r.status_code == 400 and "index" in r.json()["error"]


def test_queue_full_gives_429_and_batches(make_client, micro_model):
    from serve.backend import ModelBackend

    class Slow(ModelBackend):
        def embed_tokens(self, seqs):
            time.sleep(0.3)
            return super().embed_tokens(seqs)

    client = make_client(loader=lambda: Slow(micro_model, None), max_queue=1, max_batch_text=2)
    statuses: list[int] = []

    def call():
        statuses.append(client.post("/v1/embeddings", json={"input": "x"}).status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 429 in statuses and 200 in statuses and all(s in (200, 429) for s in statuses)
    metrics = client.get("/metrics").text
    assert 'egovlp_errors_total{type="queue_full"}' in metrics
    assert "egovlp_batch_size_bucket" in metrics and "egovlp_inference_seconds_count" in metrics


def test_batcher_groups_concurrent_requests():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from serve.batcher import Batcher

    sizes: list[int] = []

    def fn(items):
        sizes.append(len(items))
        return [i * 2 for i in items]

    async def scenario():
        b = Batcher("t", fn, ThreadPoolExecutor(1), max_batch=8, max_wait_ms=50, max_queue=100)
        b.start()
        futures = [b.submit([i]) for i in range(6)]
        gone = b.submit([100])
        gone.cancel()  # a client that went away: dropped, never computed
        results = await asyncio.gather(*futures)
        await b.stop()
        return results

    results = asyncio.run(scenario())
    assert results == [[0], [2], [4], [6], [8], [10]]
    assert sizes == [6]

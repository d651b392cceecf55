"""Failure isolation and OpenAI conformance: bad items fail alone, unexpected errors are enveloped."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest
import torch

from serve.backend import ModelBackend

FRIDGE = "#C C opens the fridge"


def _concurrently(client, bodies: list[dict], route: str = "/v1/embeddings") -> list:
    out: list = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def call(i: int) -> None:
        start.wait()
        # json.dumps escapes the lone surrogate as \ud800, as a real client's JSON would
        out[i] = client.post(
            route, content=json.dumps(bodies[i]), headers={"content-type": "application/json"}
        )

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.mark.parametrize("route", ["/v1/embeddings", "/v1/search"])
def test_lone_surrogate_fails_alone(make_client, micro_model, route):
    client = make_client(max_wait_ms=300.0)  # a long batching window: all 16 land in one batch
    key = "input" if route == "/v1/embeddings" else "query"
    bodies = [{key: f"{FRIDGE} {i}"} for i in range(15)]
    bodies.insert(7, {key: "\ud800"})
    answers = _concurrently(client, bodies, route)
    bad = answers.pop(7)
    assert bad.status_code == 400 and bad.json()["type"] == "invalid_request_error", bad.text
    assert "surrogate" in bad.json()["error"] and bad.json()["error"].startswith(key)
    assert [r.status_code for r in answers] == [200] * 15
    if route == "/v1/embeddings":
        got = np.array(answers[3].json()["data"][0]["embedding"])
        want = micro_model.encode_text([f"{FRIDGE} 3"])[0].numpy()
        np.testing.assert_allclose(got, want / np.linalg.norm(want), atol=1e-5)
    metrics = client.get("/metrics").text
    assert 'egovlp_errors_total{type="invalid_request_error"} 1.0' in metrics


def test_token_id_inputs_and_openai_keys(make_client, micro_model):
    client = make_client()
    ids = micro_model.tokenizer.encode(FRIDGE)
    by_text = client.post("/v1/embeddings", json={"input": FRIDGE}).json()
    by_ids = client.post("/v1/embeddings", json={"input": ids})
    assert by_ids.status_code == 200, by_ids.text
    body = by_ids.json()
    np.testing.assert_allclose(body["data"][0]["embedding"], by_text["data"][0]["embedding"], atol=1e-5)
    assert body["usage"]["prompt_tokens"] == len(ids)
    many = client.post("/v1/embeddings", json={"input": [[101, 2023, 102], ids]}).json()
    assert [d["index"] for d in many["data"]] == [0, 1]
    assert set(body) == {"object", "data", "model", "usage"}
    assert all(set(d) == {"object", "index", "embedding"} for d in many["data"])  # nothing beyond OpenAI's
    bad = client.post("/v1/embeddings", json={"input": [[101, 99999999, 102]]})
    assert bad.status_code == 400 and "input[0][1]" in bad.json()["error"]
    assert client.post("/v1/embeddings", json={"input": [[]]}).status_code == 400
    assert client.post("/v1/embeddings", json={"input": ""}).status_code == 400


def test_content_type_415_and_allow_on_405(make_client):
    client = make_client()
    for route in ("/v1/embeddings", "/v1/search", "/v1/video/embeddings"):
        for ctype in ("text/plain", "application/x-www-form-urlencoded"):
            r = client.post(route, content=b'{"input": "x"}', headers={"content-type": ctype})
            assert r.status_code == 415 and r.json()["type"] == "unsupported_media_type", (route, ctype)
            assert set(r.json()) == {"error", "type"} and ctype in r.json()["error"]
    r = client.get("/v1/embeddings")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["type"] == "method_not_allowed"
    r = client.post("/health")
    assert r.status_code == 405 and "GET" in r.headers["allow"]
    assert 'egovlp_errors_total{type="unsupported_media_type"} 6.0' in client.get("/metrics").text


def test_unexpected_error_is_an_enveloped_500_with_id(make_client, micro_model, caplog):
    class Broken(ModelBackend):
        def embed_tokens(self, seqs):
            raise RuntimeError("boom")

    client = make_client(loader=lambda: Broken(micro_model, None))
    r = client.post("/v1/embeddings", json={"input": "x"})
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["type"] == "internal_error" and body["id"] in body["error"] and "boom" not in body["error"]
    assert body["id"] in caplog.text  # the id leads to the logged traceback
    assert 'egovlp_errors_total{type="internal_error"} 1.0' in client.get("/metrics").text
    assert client.get("/ready").status_code == 200  # one failing request does not take the service down


def test_out_of_memory_is_503_with_retry_after(make_client, micro_model):
    class Oom(ModelBackend):
        def embed_tokens(self, seqs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    client = make_client(loader=lambda: Oom(micro_model, None))
    r = client.post("/v1/embeddings", json={"input": "x"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["type"] == "out_of_memory"


def test_dead_batcher_is_reported_and_restarted(make_client):
    client = make_client()
    state = client.app.state.egovlp
    batcher = state.text_batcher
    batcher.restart_delay = 3.0
    original = batcher._take_batch
    calls = {"n": 0}

    def crash_once():
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("loop bug")
        return original()

    batcher._take_batch = crash_once
    r = client.post("/v1/embeddings", json={"input": "x"})
    assert r.status_code == 503 and r.json()["type"] == "service_unavailable" and "retry-after" in r.headers
    assert client.get("/ready").status_code == 503 and client.get("/health").json()["ready"] is False
    assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 503
    deadline = time.time() + 15
    while client.get("/ready").status_code != 200 and time.time() < deadline:
        time.sleep(0.1)
    assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 200
    assert 'egovlp_worker_restarts_total{modality="text"} 1.0' in client.get("/metrics").text


def test_batcher_isolates_a_failing_request():
    from concurrent.futures import ThreadPoolExecutor

    from serve.batcher import Batcher

    def fn(items):
        if "bad" in items:
            raise ValueError("bad item")
        return [i.upper() for i in items]

    async def scenario():
        b = Batcher("t", fn, ThreadPoolExecutor(1), max_batch=8, max_wait_ms=50, max_queue=10)
        b.start()
        futures = [b.submit(["a"]), b.submit(["bad"]), b.submit(["c", "d"])]
        results = await asyncio.gather(*futures, return_exceptions=True)
        await b.stop()
        return results

    ok1, err, ok2 = asyncio.run(scenario())
    assert ok1 == ["A"] and ok2 == ["C", "D"] and isinstance(err, ValueError)


def test_video_admission_and_extreme_windows(make_client, video_root):
    from serve.api.errors import QueueFull
    from serve.decode.pool import DecodePool

    client = make_client()
    r = client.post("/v1/video/embeddings", json={"input": {"path": "a.mp4"}, "window": 1e-300})
    assert r.status_code == 413 and "windows" in r.json()["error"], r.text
    r = client.post("/v1/video/embeddings", json={"input": {"path": "a.mp4"}, "end": 1e308, "window": 1.5})
    assert r.status_code == 200 and [d["end"] for d in r.json()["data"]][-1] == pytest.approx(3.0, abs=0.2)
    r = client.post("/v1/video/embeddings", json={"input": {"path": "a.mp4"}, "start": 1e308})
    assert r.status_code == 400 and r.json()["type"] == "invalid_request_error"

    async def full_pool():
        pool = DecodePool(max_workers=1, max_waiting=1)
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold():
            async with pool.slot(10):
                held.set()
                await release.wait()

        task = asyncio.ensure_future(hold())
        await held.wait()
        waiting = asyncio.ensure_future(pool.slot(10).__aenter__())  # one running, one waiting...
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):  # ...and a third is refused at once
            async with pool.slot(10):
                pass
        release.set()
        await task
        await waiting

    asyncio.run(full_pool())


def test_openapi_lists_every_status(make_client):
    client = make_client()
    doc = client.get("/openapi.json").json()
    for path in ("/v1/embeddings", "/v1/search", "/v1/video/embeddings"):
        statuses = set(doc["paths"][path]["post"]["responses"])
        assert {"200", "400", "401", "405", "413", "415", "422", "429", "500", "503"} <= statuses, path
    assert {"403", "404"} <= set(doc["paths"]["/v1/video/embeddings"]["post"]["responses"])
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    info = client.get("/info").json()
    assert info["precision"]["text"] == "fp32" and info["weights_hash"]

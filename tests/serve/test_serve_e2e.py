"""A real uvicorn on 127.0.0.1: the stock openai client, egovlp.client, hostile uploads, dropped requests."""

from __future__ import annotations

import os
import socket
import threading
import time

import httpx
import numpy as np
import openai
import pytest
import uvicorn

from serve.backend import ModelBackend


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(micro_model, index_dir, video_root):
    from serve.app import create_app
    from serve.index.store import load_index
    from serve.settings import Settings

    servers = []

    def start(backend=None, **overrides) -> str:
        settings = Settings(**({"allowed_roots": [str(video_root)], "api_key": "k3y"} | overrides))
        backend = backend or ModelBackend(micro_model, load_index(index_dir, use_gpu=False))
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings, lambda: backend), "127.0.0.1", port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not start")

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def test_openai_client_and_own_client(live_server, micro_model):
    from egovlp.client import EgoVLPClient, ServiceError

    url = live_server()
    client = openai.OpenAI(base_url=url + "/v1", api_key="k3y", max_retries=0)
    got = client.embeddings.create(model="egovlp", input=["#C C opens the fridge", "x"])  # base64 on the wire
    assert len(got.data) == 2 and len(got.data[0].embedding) == 16 and got.usage.total_tokens > 0
    want = micro_model.encode_text(["#C C opens the fridge"])[0].numpy()
    np.testing.assert_allclose(got.data[0].embedding, want / np.linalg.norm(want), atol=1e-5)
    floats = client.embeddings.create(model="egovlp", input="x", encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, got.data[1].embedding, atol=1e-6)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="m", input="x"
        )

    with EgoVLPClient(url, api_key="k3y", retries=1) as own:
        hits = own.search("#C C opens the fridge", k=2)
        assert hits[0]["clip_uid"] == "fridge" and len(hits) == 2
        assert own.info()["dim"] == 16
        with pytest.raises(ServiceError) as err:
            own.embed_text([])
        assert err.value.status == 400


def test_hostile_upload_refused_quickly(live_server):
    url = live_server(api_key=None)
    started = time.time()
    r = httpx.post(url + "/v1/video/embeddings", files={"file": ("x.mp4", os.urandom(20_000), "video/mp4")})
    assert r.status_code == 415 and r.json()["type"] == "unsupported_media_type"
    assert time.time() - started < 10
    r = httpx.post(url + "/v1/video/embeddings", files={"file": ("x.png", b"\x89PNG....", "image/png")})
    assert r.status_code == 415
    assert httpx.get(url + "/health").status_code == 200


def test_decode_timeout_kills_the_worker(video_root):
    from serve_testlib import hanging_decoder

    from serve.api.errors import DecodeTimeout
    from serve.decode.pool import DecodePool, WindowSpec

    pool = DecodePool(max_workers=1)
    pool.worker_target = hanging_decoder
    pool.start()
    hung = pool._idle.get()
    pool._idle.put(hung)
    started = time.time()
    with pytest.raises(DecodeTimeout, match="within 0.5 s"):
        pool.decode_blocking(str(video_root / "a.mp4"), WindowSpec(), 0.5, "input")
    assert time.time() - started < 10
    hung.proc.join(5)
    assert not hung.proc.is_alive()  # killed, and a fresh worker took its place
    pool.close()


def test_client_gone_is_dropped(live_server, micro_model):
    class Slow(ModelBackend):
        def embed_tokens(self, seqs):
            time.sleep(1.0)
            return super().embed_tokens(seqs)

    url = live_server(backend=Slow(micro_model, None), api_key=None, max_batch_text=1)
    busy = threading.Thread(
        target=lambda: httpx.post(url + "/v1/embeddings", json={"input": "a"}, timeout=10)
    )
    busy.start()
    time.sleep(0.2)
    with pytest.raises(httpx.ReadTimeout):  # queued behind the busy batch; this client gives up
        httpx.post(url + "/v1/embeddings", json={"input": "b"}, timeout=0.3)
    busy.join()
    time.sleep(0.3)
    metrics = httpx.get(url + "/metrics").text
    assert 'egovlp_dropped_total{modality="text"} 1.0' in metrics

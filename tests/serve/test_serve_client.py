"""egovlp.client: retries with jitter through tenacity, honouring Retry-After in seconds or as an HTTP date."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from egovlp.client import EgoVLPClient, ServiceError, retry_after_seconds


def test_retry_after_forms():
    now = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("3", now) == 3.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None) is None


def _scripted(answers: list[httpx.Response | Exception]):
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        answer = answers[min(len(calls) - 1, len(answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), calls


def _ok() -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": [{"embedding": [1.0]}]})


def test_retries_honour_retry_after_seconds_and_date():
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=4), usegmt=True)
    transport, calls = _scripted(
        [
            httpx.Response(429, headers={"Retry-After": "2"}, json={"error": "busy", "type": "queue_full"}),
            httpx.Response(503, headers={"Retry-After": later}, json={"error": "x", "type": "not_ready"}),
            httpx.ConnectError("refused"),
            _ok(),
        ]
    )
    client = EgoVLPClient("http://svc", transport=transport, retries=5, backoff=0.01, max_backoff=0.05)
    waits: list[float] = []
    client.sleep = waits.append
    assert client.embed_text("x") == [[1.0]]
    assert len(calls) == 4 and len(waits) == 3
    assert waits[0] >= 2.0 and 2.5 <= waits[1] <= 4.0  # the server's floors (the date loses a moment)
    assert waits[2] <= 0.05  # a connection error: only the jittered backoff


def test_gives_up_with_the_last_answer_and_does_not_retry_4xx():
    transport, calls = _scripted([httpx.Response(429, json={"error": "busy", "type": "queue_full"})])
    client = EgoVLPClient("http://svc", transport=transport, retries=2, backoff=0.01)
    client.sleep = lambda s: None
    with pytest.raises(ServiceError) as err:
        client.embed_text("x")
    assert err.value.status == 429 and len(calls) == 3
    transport, calls = _scripted(
        [httpx.Response(400, json={"error": "input: bad", "type": "invalid_request_error"})]
    )
    client = EgoVLPClient("http://svc", transport=transport, retries=3)
    with pytest.raises(ServiceError) as err:
        client.embed_text("x")
    assert err.value.status == 400 and err.value.kind == "invalid_request_error" and len(calls) == 1

"""A small synchronous client for `egovlp serve`, with retries on 429/503 and connection errors.

    from egovlp.client import EgoVLPClient
    with EgoVLPClient("http://127.0.0.1:8000", api_key=None) as c:
        vecs = c.embed_text(["#C C opens the fridge"])          # list of 256-d lists
        hits = c.search("#C C opens the fridge", k=5)          # [{score, clip_uid, ...}]

The text route is OpenAI-compatible, so the stock client works too:

    from openai import OpenAI
    OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="KEY or anything").embeddings.create(
        model="egovlp", input=["#C C opens the fridge"]).data[0].embedding
"""

from __future__ import annotations

import base64
import email.utils
import os
import time
from datetime import datetime, timezone
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_random_exponential,
)

RETRY_STATUSES = (429, 502, 503, 504)
RETRY_ERRORS = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectTimeout)
MAX_RETRY_AFTER_S = 60.0


class ServiceError(RuntimeError):
    """A non-retryable error answer: carries the status and the envelope's type."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(f"{status} {kind}: {message}")
        self.status, self.kind = status, kind


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header -> seconds to wait: delta-seconds or an HTTP-date (RFC 9110); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class _WaitRetryAfter:
    """tenacity wait: full-jitter exponential backoff, never shorter than the server's Retry-After."""

    def __init__(self, backoff: float, max_backoff: float) -> None:
        self.jitter = wait_random_exponential(multiplier=backoff, max=max_backoff)

    def __call__(self, state: RetryCallState) -> float:
        wait = self.jitter(state)
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            server = retry_after_seconds(outcome.result().headers.get("retry-after"))
            if server is not None:
                wait = max(wait, min(server, MAX_RETRY_AFTER_S))
        return wait


class EgoVLPClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.sleep = time.sleep  # tests replace it to record the waits

    def __enter__(self) -> EgoVLPClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send; connection errors and 429/502/503/504 are retried (tenacity: jittered backoff, Retry-After)."""
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=_WaitRetryAfter(self.backoff, self.max_backoff),
            retry=retry_if_exception_type(RETRY_ERRORS)
            | retry_if_result(lambda r: r.status_code in RETRY_STATUSES),
            retry_error_callback=lambda state: state.outcome.result(),  # the last answer, or its error
            sleep=self.sleep,
            reraise=True,
        )
        response = retrying(self._http.request, method, url, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
                message, kind = str(body.get("error")), str(body.get("type"))
            except ValueError:
                message, kind = response.text[:200], "http_error"
            raise ServiceError(response.status_code, message, kind)
        return response

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self._http.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"service not ready after {timeout:g} s")

    def info(self) -> dict[str, Any]:
        return self._request("GET", "/info").json()

    def embed_text(self, texts: list[str] | str) -> list[list[float]]:
        body = self._request("POST", "/v1/embeddings", json={"input": texts, "model": "egovlp"}).json()
        return [d["embedding"] for d in body["data"]]

    def embed_video(
        self,
        path: str | os.PathLike,
        start: float | None = None,
        end: float | None = None,
        window: float | None = None,
    ) -> list[dict[str, Any]]:
        """Upload a local video (base64 data URL); one {embedding, start, end} per window."""
        with open(path, "rb") as fh:
            url = "data:video/mp4;base64," + base64.b64encode(fh.read()).decode("ascii")
        payload = {"input": url, "start": start, "end": end, "window": window}
        body = self._request("POST", "/v1/video/embeddings", json=payload).json()
        return body["data"]

    def search(self, query: str, k: int = 10) -> list[dict[str, Any]]:
        return self._request("POST", "/v1/search", json={"query": query, "k": k}).json()["results"]

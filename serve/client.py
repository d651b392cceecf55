"""A small synchronous client for `egovlp serve`, with retries on 429/503 and connection errors.

    from serve.client import EgoVLPClient
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
import os
import time
from typing import Any

import httpx

RETRY_STATUSES = (429, 502, 503, 504)


class ServiceError(RuntimeError):
    """A non-retryable error answer: carries the status and the envelope's type."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(f"{status} {kind}: {message}")
        self.status, self.kind = status, kind


class EgoVLPClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.2,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self.retries, self.backoff = retries, backoff

    def __enter__(self) -> EgoVLPClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying connection errors and 429/5xx-busy answers with exponential backoff."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                if last:
                    raise
                time.sleep(self.backoff * 2**attempt)
                continue
            if response.status_code in RETRY_STATUSES and not last:
                # the server's Retry-After is a floor for the wait
                retry_after = float(response.headers.get("retry-after", 0) or 0)
                time.sleep(max(retry_after, self.backoff * 2**attempt))
                continue
            if response.status_code >= 400:
                try:
                    body = response.json()
                    message, kind = str(body.get("error")), str(body.get("type"))
                except ValueError:
                    message, kind = response.text[:200], "http_error"
                raise ServiceError(response.status_code, message, kind)
            return response
        raise AssertionError("unreachable")

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

"""A mixed load with poisoned inputs against a running service (used by the tests and bench_serve.py).

`run_load` keeps `concurrency` requests in flight for `duration_s` seconds: text and token-id
embeddings, text and video search, windowed video embeddings, and poisoned requests mixed in (a
lone surrogate, malformed JSON, a wrong Content-Type, garbage video bytes, absurd windows, token
ids outside the vocabulary, k=0). Each kind has the statuses it may get: good requests 200 (or 429
when the service sheds load), each poisoned one its own 4xx. Anything else is counted as unexpected.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

JSON = {"content-type": "application/json"}
GOOD = (200, 429)


@dataclass
class Kind:
    name: str
    weight: float
    allowed: tuple[int, ...]
    build: Any  # (rng) -> dict of httpx.request kwargs (method POST)
    route: str


def kinds(video_path: str) -> list[Kind]:
    garbage = "data:video/mp4;base64," + base64.b64encode(os.urandom(3000)).decode()
    words = ["#C C opens the fridge", "#C C cuts a tomato", "#C C walks to the door", "#O a man talks"]

    def text(rng):
        return {"json": {"input": [rng.choice(words) for _ in range(rng.randint(1, 4))]}}

    return [
        Kind("text", 0.25, GOOD, text, "/v1/embeddings"),
        Kind("tokens", 0.08, GOOD, lambda rng: {"json": {"input": [101, 2023, 102]}}, "/v1/embeddings"),
        Kind("search", 0.15, GOOD, lambda rng: {"json": {"query": rng.choice(words), "k": 5}}, "/v1/search"),
        Kind(
            "video",
            0.10,
            GOOD,
            lambda rng: {"json": {"input": {"path": video_path}, "window": 1.0}},
            "/v1/video/embeddings",
        ),
        Kind(
            "video_search",
            0.07,
            GOOD,
            lambda rng: {"json": {"video": {"path": video_path}, "k": 3}},
            "/v1/search",
        ),
        Kind(
            "surrogate",
            0.06,
            (400,),
            lambda rng: {"content": '{"input": "ok \\ud800"}', "headers": JSON},
            "/v1/embeddings",
        ),
        Kind(
            "bad_json", 0.05, (422,), lambda rng: {"content": b"{not json", "headers": JSON}, "/v1/embeddings"
        ),
        Kind(
            "content_type",
            0.05,
            (415,),
            lambda rng: {"content": b"input=x", "headers": {"content-type": "text/plain"}},
            "/v1/search",
        ),
        Kind(
            "garbage_video",
            0.06,
            (415, 429),
            lambda rng: {"json": {"input": garbage}},
            "/v1/video/embeddings",
        ),
        Kind(
            "tiny_window",
            0.05,
            (413, 429),
            lambda rng: {"json": {"input": {"path": video_path}, "window": 1e-300}},
            "/v1/video/embeddings",
        ),
        Kind(
            "bad_tokens",
            0.04,
            (400,),
            lambda rng: {"json": {"input": [[101, 99999999, 102]]}},
            "/v1/embeddings",
        ),
        Kind("k_zero", 0.04, (422,), lambda rng: {"json": {"query": "x", "k": 0}}, "/v1/search"),
    ]


@dataclass
class LoadResult:
    duration_s: float
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    transport_errors: int = 0

    def summary(self) -> dict[str, Any]:
        good = [t for k, ts in self.latencies_ms.items() if k in GOOD_KINDS for t in ts]
        ok = sum(s.get(200, 0) for k, s in self.statuses.items() if k in GOOD_KINDS)
        total = sum(sum(s.values()) for s in self.statuses.values())
        server_errors = sum(n for s in self.statuses.values() for code, n in s.items() if code >= 500)
        return {
            "requests": total,
            "good_ok": ok,
            "good_ok_per_s": round(ok / self.duration_s, 1),
            "shed_429": sum(s.get(429, 0) for s in self.statuses.values()),
            "server_errors_5xx": server_errors,
            "unexpected": len(self.unexpected),
            "transport_errors": self.transport_errors,
            "p50_ms": round(float(np.percentile(good, 50)), 1) if good else None,
            "p99_ms": round(float(np.percentile(good, 99)), 1) if good else None,
            "statuses": {k: dict(sorted(v.items())) for k, v in self.statuses.items()},
        }


GOOD_KINDS = ("text", "tokens", "search", "video", "video_search")


async def run_load(
    url: str,
    video_path: str,
    duration_s: float = 10.0,
    concurrency: int = 64,
    seed: int = 0,
    api_key: str | None = None,
) -> LoadResult:
    """`concurrency` workers send weighted random requests until `duration_s` has passed."""
    table = kinds(video_path)
    weights = [k.weight for k in table]
    result = LoadResult(duration_s)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    deadline = time.monotonic() + duration_s
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60.0) as client:

        async def worker(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            while time.monotonic() < deadline:
                kind = rng.choices(table, weights)[0]
                started = time.perf_counter()
                try:
                    r = await client.post(kind.route, **kind.build(rng))
                except httpx.TransportError as err:
                    result.transport_errors += 1
                    result.unexpected.append(f"{kind.name} -> {type(err).__name__}: {err}")
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                counts = result.statuses.setdefault(kind.name, {})
                counts[r.status_code] = counts.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    result.latencies_ms.setdefault(kind.name, []).append(elapsed)
                if r.status_code not in kind.allowed:
                    result.unexpected.append(f"{kind.name} -> {r.status_code}: {r.text[:160]}")
                elif r.status_code == 429 and "retry-after" not in r.headers:
                    result.unexpected.append(f"{kind.name} -> 429 without Retry-After")
                if r.status_code == 429:
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")) * rng.random())

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return result

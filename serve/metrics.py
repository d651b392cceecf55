"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serve.asgi import HTTPMiddleware

# The routes we label by name; anything else (404 probes, fuzzing) is "other" to bound cardinality.
KNOWN_ROUTES = (
    "/v1/embeddings",
    "/v1/video/embeddings",
    "/v1/search",
    "/health",
    "/ready",
    "/info",
    "/metrics",
)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "egovlp_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.errors = Counter("egovlp_errors", "Error responses by error type", ["type"], registry=r)
        self.request_seconds = Histogram(
            "egovlp_request_seconds", "Request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "egovlp_queue_seconds",
            "Time a request waited in its batcher queue",
            ["modality"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "egovlp_batch_size", "Items per executed batch", ["modality"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "egovlp_inference_seconds",
            "Model time per batch",
            ["modality"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.search_seconds = Histogram(
            "egovlp_search_seconds", "FAISS search time per request", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.decode_seconds = Histogram(
            "egovlp_decode_seconds", "Video decoding time per request", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("egovlp_queue_depth", "Requests waiting", ["modality"], registry=r)
        self.dropped = Counter(
            "egovlp_dropped", "Queued requests dropped because the client went away", ["modality"], registry=r
        )
        self.ready = Gauge("egovlp_ready", "1 once model and index are loaded", registry=r)
        self.restarts = Counter(
            "egovlp_worker_restarts", "Batcher tasks that died and were restarted", ["modality"], registry=r
        )
        self.decodes = Gauge("egovlp_decodes_in_flight", "Video decodes running or waiting", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware(HTTPMiddleware):
    """Pure ASGI middleware: counts every response by route and status and times it."""

    def __init__(self, app, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        route = path if path in KNOWN_ROUTES else "other"
        status = {"code": 500}
        start = time.perf_counter()

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - start)

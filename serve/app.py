"""`egovlp serve`: the FastAPI embedding and search service.

Routes validate (pydantic schemas, limits) -> take a place in a bounded per-modality batcher (429 at
once when full) -> the backend runs batches on one worker thread. Model and index load in the
background: /health answers at once, /ready and the /v1 routes say 503 until loading finished.
Every error leaves through `serve.errors.error_response` as `{"error": ..., "type": ...}`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from egovlp.errors import InputError
from serve.batcher import Batcher
from serve.decode import WindowSpec, decode_video, frames_to_clips
from serve.errors import NotReady, ServiceError, TooLarge, UnsupportedMedia, classify, error_response
from serve.inputs import materialize, materialize_upload
from serve.metrics import Metrics, MetricsMiddleware
from serve.schemas import (
    VIDEO_OPENAPI_BODY,
    EmbeddingRequest,
    EmbeddingResponse,
    SearchRequest,
    SearchResponse,
    VideoEmbeddingRequest,
)
from serve.security import BodyLimitMiddleware, check_api_key

logger = logging.getLogger(__name__)
VERSION = "0.1.0"


@dataclass
class Settings:
    """Everything the service is configured with; /info shows the limits."""

    model: str | None = None
    index: str | None = None
    api_key: str | None = None
    allowed_roots: list[str] = field(default_factory=list)
    device: str | None = None
    max_batch_text: int = 32
    max_batch_video: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_inputs: int = 256
    max_text_chars: int = 20_000
    max_body_bytes: int = 64 * 1024 * 1024
    max_video_seconds: float = 600.0
    max_windows: int = 64
    decode_timeout_s: float = 30.0
    max_decodes: int = 4
    cors_origins: list[str] = field(default_factory=list)

    def limits(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k.startswith(("max_", "decode_"))}


class _ClientGone(Exception):
    pass


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body is already read, so receive() only reports that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _run_batched(request: Request, batcher: Batcher, items: list) -> list:
    """Queue items and wait; if the client leaves first, cancel so the batcher drops them."""
    future = batcher.submit(items)
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if future in done:
        return future.result()
    future.cancel()
    raise _ClientGone()


def _encode(vec: np.ndarray, fmt: str, normalize: bool) -> list[float] | str:
    vec = np.asarray(vec, dtype=np.float32)
    if normalize:
        vec = vec / max(float(np.linalg.norm(vec)), 1e-8)
    if fmt == "base64":
        # OpenAI's base64 format: little-endian float32 bytes
        return base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
    return vec.tolist()


def create_app(settings: Settings, loader: Callable[[], Any] | None = None) -> FastAPI:
    """The ASGI app. `loader()` returns a backend (default: load settings.model / settings.index)."""
    from serve.backend import load_backend

    if loader is None:

        def loader():
            return load_backend(settings.model, settings.index, settings.device, settings.max_batch_text)

    metrics = Metrics()
    model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="egovlp-model")
    decode_threads = ThreadPoolExecutor(max_workers=settings.max_decodes, thread_name_prefix="egovlp-decode")
    state: dict[str, Any] = {"backend": None, "error": None}

    def backend():
        if state["backend"] is None:
            raise NotReady(
                "model is loading" if state["error"] is None else f"model failed to load: {state['error']}"
            )
        return state["backend"]

    def run_text(texts: list[str]) -> list[tuple[np.ndarray, int]]:
        b = backend()
        return list(zip(b.embed_text(texts), b.token_counts(texts), strict=True))

    text_batcher = Batcher(
        "text",
        run_text,
        model_thread,
        settings.max_batch_text,
        settings.max_wait_ms,
        settings.max_queue,
        metrics,
    )
    video_batcher = Batcher(
        "video",
        lambda clips: list(backend().embed_video(clips)),
        model_thread,
        settings.max_batch_video,
        settings.max_wait_ms,
        settings.max_queue,
        metrics,
    )

    async def load() -> None:
        try:
            state["backend"] = await asyncio.get_running_loop().run_in_executor(model_thread, loader)
            metrics.ready.set(1)
        except Exception as err:  # noqa: BLE001 - reported by /ready and the log
            state["error"] = " ".join(str(err).split())[:300]
            logger.error("loading failed: %s", state["error"], exc_info=err)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        text_batcher.start()
        video_batcher.start()
        task = asyncio.ensure_future(load())
        yield
        task.cancel()
        await text_batcher.stop()
        await video_batcher.stop()
        model_thread.shutdown(wait=False, cancel_futures=True)
        decode_threads.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="egovlp", version=VERSION, lifespan=lifespan)
    bearer = HTTPBearer(auto_error=False)

    async def auth(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        check_api_key(request.headers.get("authorization"), settings.api_key)

    def handle(_: Request, err: Exception) -> JSONResponse:
        metrics.errors.labels(classify(err)[1]).inc()
        return error_response(err)

    for cls in (ServiceError, InputError, RequestValidationError, HTTPException):
        app.add_exception_handler(cls, handle)

    def video_spec(start, end, window) -> WindowSpec:
        b = backend()
        return WindowSpec(start, end, window, b.num_frames, settings.max_video_seconds, settings.max_windows)

    async def embed_video_file(request: Request, path: str, spec: WindowSpec, name: str):
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        windows, frames = await loop.run_in_executor(
            decode_threads, decode_video, path, spec, settings.decode_timeout_s, name
        )
        clips = await loop.run_in_executor(decode_threads, frames_to_clips, frames, backend().img_size)
        metrics.decode_seconds.observe(time.perf_counter() - started)
        return windows, await _run_batched(request, video_batcher, list(clips))

    def envelope(vectors, fmt: str, normalize: bool, tokens: int, windows=None) -> dict[str, Any]:
        data = []
        for i, vec in enumerate(vectors):
            item: dict[str, Any] = {
                "object": "embedding",
                "index": i,
                "embedding": _encode(vec, fmt, normalize),
            }
            if windows is not None:
                item["start"], item["end"] = windows[i]
            data.append(item)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": backend().name, "usage": usage}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "ready": state["backend"] is not None}

    @app.get("/ready", responses={503: {"description": "still loading"}})
    async def ready() -> dict[str, Any]:
        backend()
        return {"status": "ready"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": VERSION,
            "ready": state["backend"] is not None,
            "limits": settings.limits(),
        }
        out["auth"] = bool(settings.api_key)
        if state["backend"] is not None:
            out.update(state["backend"].info())
        return out

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, dependencies=[Depends(auth)])
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        b = backend()
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts:
            raise InputError("input: empty list, nothing to embed")
        if len(texts) > settings.max_inputs:
            raise TooLarge(f"input: {len(texts)} texts, the limit is {settings.max_inputs} per request")
        for i, t in enumerate(texts):
            if len(t) > settings.max_text_chars:
                raise TooLarge(f"input[{i}]: {len(t)} characters, the limit is {settings.max_text_chars}")
        if body.dimensions is not None and body.dimensions != b.dim:
            raise InputError(f"dimensions: this model gives {b.dim}-d embeddings, got {body.dimensions}")
        try:
            results = await _run_batched(request, text_batcher, texts)
        except _ClientGone:
            return Response(status_code=499)
        tokens = sum(n for _, n in results)
        return envelope([v for v, _ in results], body.encoding_format, body.normalize, tokens)

    @app.post("/v1/video/embeddings", openapi_extra=VIDEO_OPENAPI_BODY, dependencies=[Depends(auth)])
    async def video_embeddings(request: Request) -> Any:
        backend()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype == "multipart/form-data":
                async with request.form(max_files=1, max_fields=16) as form:
                    upload = form.get("file")
                    if not isinstance(upload, UploadFile):
                        raise InputError("file: missing multipart field 'file' with the video")
                    fmt = str(form.get("encoding_format") or "float")
                    if fmt not in ("float", "base64"):
                        raise InputError(f"encoding_format: expected float or base64, got {fmt!r}")
                    spec = video_spec(*(_form_float(form, k) for k in ("start", "end", "window")))
                    with materialize_upload(upload, "file") as path:
                        windows, vectors = await embed_video_file(request, path, spec, "file")
                    return envelope(vectors, fmt, True, 0, windows)
            if ctype not in ("application/json", ""):
                raise UnsupportedMedia(f"content-type {ctype!r}: send JSON or multipart/form-data")
            try:
                body = VideoEmbeddingRequest.model_validate_json(await request.body())
            except ValidationError as err:
                raise RequestValidationError(err.errors(include_url=False, include_context=False)) from None
            spec = video_spec(body.start, body.end, body.window)
            with materialize(body.input, settings.allowed_roots, "input") as path:
                windows, vectors = await embed_video_file(request, path, spec, "input")
            return envelope(vectors, body.encoding_format, body.normalize, 0, windows)
        except _ClientGone:
            return Response(status_code=499)

    @app.post("/v1/search", response_model=SearchResponse, dependencies=[Depends(auth)])
    async def search(body: SearchRequest, request: Request) -> Any:
        b = backend()
        if (body.query is None) == (body.video is None):
            raise InputError("give exactly one of 'query' (text) or 'video'")
        if b.index is None:
            b.search(np.zeros((1, b.dim), np.float32), 1)  # raises NoIndex
        try:
            if body.query is not None:
                if len(body.query) > settings.max_text_chars:
                    raise TooLarge(
                        f"query: {len(body.query)} characters, the limit is {settings.max_text_chars}"
                    )
                vector = (await _run_batched(request, text_batcher, [body.query]))[0][0]
            else:
                spec = video_spec(body.start, body.end, None)
                with materialize(body.video, settings.allowed_roots, "video") as path:
                    vector = (await embed_video_file(request, path, spec, "video"))[1][0]
        except _ClientGone:
            return Response(status_code=499)
        started = time.perf_counter()
        hits = await asyncio.to_thread(b.search, np.asarray(vector)[None], body.k)
        metrics.search_seconds.observe(time.perf_counter() - started)
        return {"results": hits[0], "model": b.name, "k": body.k}

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:  # off unless asked for: browsers on other origins cannot call the API
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"])
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _form_float(form, key: str) -> float | None:
    value = form.get(key)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{key}: expected a number of seconds, got {str(value)[:40]!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="egovlp serve", description="EgoVLP embedding and search HTTP service."
    )
    parser.add_argument("--model", required=True, help="checkpoint (.pth) or model directory")
    parser.add_argument("--index", default=None, help="index folder from `egovlp index`")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=os.environ.get("EGOVLP_API_KEY"), help="require Bearer KEY")
    parser.add_argument(
        "--allowed-root", action="append", default=[], help="folder server-side paths may use"
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--max-batch", type=int, default=32, help="text batch size (video: a quarter)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill")
    parser.add_argument("--max-queue", type=int, default=64, help="queued requests per modality before 429")
    parser.add_argument("--max-body-mb", type=float, default=64.0, help="request body limit")
    parser.add_argument("--decode-timeout", type=float, default=30.0, help="seconds per video decode")
    parser.add_argument("--cors-origin", action="append", default=[], help="allow this browser origin")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if not os.path.exists(args.model):
        raise InputError(f"--model {args.model}: no such file or directory")
    if args.index and not os.path.isdir(args.index):
        raise InputError(f"--index {args.index}: no such index folder")
    for root in args.allowed_root:
        if not os.path.isdir(root):
            raise InputError(f"--allowed-root {root}: no such folder")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings(
        model=args.model,
        index=args.index,
        api_key=args.api_key,
        allowed_roots=args.allowed_root,
        device=args.device,
        max_batch_text=args.max_batch,
        max_batch_video=max(1, args.max_batch // 4),
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        decode_timeout_s=args.decode_timeout,
        cors_origins=args.cors_origin,
    )
    import uvicorn

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0

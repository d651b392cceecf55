"""`egovlp serve`: the FastAPI embedding and search service, assembled from routers over `AppState`.

Routes validate (pydantic schemas, limits, every text item) -> take a place in a bounded,
supervised per-modality batcher or the bounded decode pool (429 at once when full) -> the backend
runs batches on one worker thread. `egovlp serve` loads the model and index before the server
starts (serve.cli); an app built with a `loader` loads in the background instead, and /ready
says 503 until then. Every error leaves as `{"error": ..., "type": ...}` through `serve.api.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from egovlp.errors import InputError
from serve.api import ops_routes, v1_routes
from serve.api.errors import ServiceError, classify, error_response
from serve.api.schemas import tighten_openapi
from serve.api.security import BodyLimitMiddleware, ContentTypeMiddleware, ErrorEnvelopeMiddleware
from serve.backend import ModelBackend
from serve.metrics import MetricsMiddleware
from serve.settings import Settings
from serve.state import VERSION, AppState, load_settings_backend

__all__ = ["Settings", "create_app"]


def create_app(
    settings: Settings,
    loader: Callable[[], ModelBackend] | None = None,
    backend: ModelBackend | None = None,
) -> FastAPI:
    """The ASGI app. Give a loaded `backend`, or a `loader()` run in the background at startup
    (default: load settings.model / settings.index)."""
    if loader is None:
        loader = functools.partial(load_settings_backend, settings)

    state = AppState(settings, loader)
    state.backend_ = backend  # None: the loader runs in the background at startup

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.start()
        if backend is not None:
            await state.load()  # only the decode workers: ready before the first request
            task = None
        else:
            task = asyncio.ensure_future(state.load())
        yield
        if task is not None:
            task.cancel()
        await state.stop()

    app = FastAPI(title="egovlp", version=VERSION, lifespan=lifespan)
    app.state.egovlp = state

    def handle(_: Request, err: Exception) -> JSONResponse:
        state.metrics.errors.labels(classify(err)[1]).inc()
        return error_response(err)

    for cls in (ServiceError, InputError, RequestValidationError, HTTPException):
        app.add_exception_handler(cls, handle)
    app.include_router(ops_routes.router)
    app.include_router(v1_routes.router)
    default_openapi = app.openapi

    def openapi() -> dict:
        """FastAPI's document with the enforced limits filled in (cached once the model is loaded)."""
        if app.openapi_schema is not None and state.loaded:
            return app.openapi_schema
        app.openapi_schema = None
        b = state.backend_
        model = None if b is None else {"vocab_size": b.vocab_size, "max_tokens": b.max_tokens, "dim": b.dim}
        doc = tighten_openapi(default_openapi(), settings.limits(), model)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]

    def count(kind: str) -> None:
        state.metrics.errors.labels(kind).inc()

    # added innermost first: Metrics > errors > CORS > body limit > content type > routes
    app.add_middleware(ContentTypeMiddleware, on_reject=count)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:  # off unless asked for: browsers on other origins cannot call the API
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"])
    app.add_middleware(ErrorEnvelopeMiddleware, on_error=count)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app

"""Request hardening: API key check, body size limit while streaming, media types, path confinement.

The middlewares here answer before any route runs; their 413 / 415 / 500 bodies still come from the
one error table (`serve.api.errors.error_response`), as every route's do.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from pathlib import Path

from starlette.exceptions import HTTPException

from serve.api.errors import (
    Forbidden,
    NotFound,
    TooLarge,
    Unauthorized,
    UnsupportedMedia,
    classify,
    error_response,
)
from serve.asgi import HTTPMiddleware


def check_api_key(authorization: str | None, api_key: str | None) -> None:
    """Raise Unauthorized unless no key is configured or the header is `Bearer <key>`."""
    if not api_key:
        return
    if not authorization:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    # constant-time comparison so the key cannot be guessed byte by byte from timings
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise Unauthorized("invalid API key")


def confine_path(raw: str, roots: Sequence[str | os.PathLike]) -> Path:
    """A client-supplied server-side path -> its real path, which must lie inside one allowed root.

    `..` components are refused outright; symlinks are resolved before the containment check, so a
    link inside a root that points outside is refused too. Relative paths are taken from the first root.
    """
    if not roots:
        raise Forbidden("server-side paths are disabled (start the server with --allowed-root DIR)")
    if not raw or "\x00" in raw:
        raise Forbidden("input.path: empty or contains a NUL byte")
    if ".." in Path(raw).parts:
        raise Forbidden(f"input.path {raw!r}: '..' components are not allowed")
    real_roots = [os.path.realpath(r) for r in roots]
    candidate = raw if os.path.isabs(raw) else os.path.join(real_roots[0], raw)
    real = os.path.realpath(candidate)
    for root in real_roots:
        if os.path.commonpath([root, real]) == root:
            break
    else:
        raise Forbidden(f"input.path {raw!r} is outside the allowed roots")
    if not os.path.isfile(real):
        raise NotFound(f"input.path {raw!r}: no such file")
    return Path(real)


class BodyLimitMiddleware(HTTPMiddleware):
    """Pure ASGI middleware: 413 when Content-Length, or the bytes actually streamed, exceed the limit.

    Counting the streamed bytes matters for chunked uploads that send no Content-Length.
    """

    def __init__(self, app, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def _reject(self, scope, receive, send) -> None:
        response = error_response(TooLarge(f"request body larger than {self.max_bytes} bytes"))
        await response(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(scope, receive, send)
                    return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        tracked = _TrackedSend(send)
        try:
            await self.app(scope, limited_receive, tracked)
        except _BodyTooLarge:
            if not tracked.started:
                await self._reject(scope, receive, send)


class _TrackedSend:
    """An ASGI `send` that remembers whether the response has started (then no error body can follow)."""

    def __init__(self, send) -> None:
        self.send, self.started = send, False

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class _BodyTooLarge(HTTPException):
    """An HTTPException so FastAPI's body parsing re-raises it and the app's handler answers 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")


# POST routes -> the media types they take (a missing Content-Type is read as JSON)
MEDIA_TYPES = {
    "/v1/embeddings": ("application/json",),
    "/v1/search": ("application/json",),
    "/v1/video/embeddings": ("application/json", "multipart/form-data"),
}


class ContentTypeMiddleware:
    """Pure ASGI middleware: 415 (the error envelope) for a POST whose Content-Type the route does not take."""

    def __init__(self, app, on_reject=None) -> None:
        self.app = app
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send) -> None:
        allowed = MEDIA_TYPES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if allowed and scope.get("method") == "POST":
            raw = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
            ctype = raw.split(";")[0].strip().lower()
            if ctype and ctype not in allowed:
                err = UnsupportedMedia(f"content-type {ctype!r}: this route takes {' or '.join(allowed)}")
                if self.on_reject is not None:
                    self.on_reject(classify(err)[1])
                await error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ErrorEnvelopeMiddleware(HTTPMiddleware):
    """Pure ASGI middleware: any exception nobody handled -> the 500 `internal_error` envelope with an id.

    Without it Starlette answers a plain-text 500 and the error is not counted.
    """

    def __init__(self, app, on_error=None) -> None:
        super().__init__(app)
        self.on_error = on_error

    async def handle(self, scope, receive, send) -> None:
        tracked = _TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as err:  # noqa: BLE001 - the point of this middleware
            response = error_response(err)
            if self.on_error is not None:
                self.on_error(classify(err)[1])
            if not tracked.started:
                await response(scope, receive, send)

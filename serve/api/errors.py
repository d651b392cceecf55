"""Service errors and the one table that maps every error type to an HTTP status and envelope type.

Every error response is `{"error": "<one-line message>", "type": "<error type>"}`. Handlers raise the
exceptions below (or library `InputError` / `VideoReadError`); `error_response` looks the class up in
`ERROR_TABLE` (most specific class first) so no route picks status codes by hand.
"""

from __future__ import annotations

import logging
import uuid

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from egovlp.errors import InputError, VideoReadError

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of the service's own errors; the message is shown to the client."""


class Unauthorized(ServiceError):
    """Missing or wrong API key."""


class Forbidden(ServiceError):
    """A server-side path outside the allowed roots, or paths disabled."""


class NotFound(ServiceError):
    """A server-side path that does not exist."""


class TooLarge(ServiceError):
    """Too many bytes, inputs, windows or video seconds."""


class UnsupportedMedia(ServiceError):
    """Not a video, or a content type the route does not take."""


class DecodeTimeout(ServiceError):
    """The decoding worker did not finish in time (hostile or pathological file)."""


class QueueFull(ServiceError):
    """The batcher's bounded queue is full: retry later."""


class NotReady(ServiceError):
    """Model or index still loading (or failed to load)."""


class NoIndex(ServiceError):
    """Search asked of a server started without --index."""


class Unavailable(ServiceError):
    """A worker of the service died and is restarting, or the device ran out of memory: retry."""


def _oom_types() -> tuple[type[BaseException], ...]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return ()
    return tuple(t for t in (getattr(torch, "OutOfMemoryError", None),) if t is not None)


# (class, status, type); looked up in order, so subclasses come before their bases.
ERROR_TABLE: list[tuple[type[BaseException], int, str]] = [
    (Unauthorized, 401, "authentication_error"),
    (Forbidden, 403, "permission_error"),
    (NotFound, 404, "not_found_error"),
    (TooLarge, 413, "payload_too_large"),
    (UnsupportedMedia, 415, "unsupported_media_type"),
    (VideoReadError, 415, "unsupported_media_type"),
    (DecodeTimeout, 422, "video_decode_timeout"),
    (RequestValidationError, 422, "validation_error"),
    (QueueFull, 429, "queue_full"),
    (NotReady, 503, "not_ready"),
    (Unavailable, 503, "service_unavailable"),
    *((t, 503, "out_of_memory") for t in _oom_types()),
    (NoIndex, 400, "invalid_request_error"),
    (InputError, 400, "invalid_request_error"),
    (ServiceError, 400, "invalid_request_error"),
]

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "method_not_allowed",
    422: "validation_error",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def classify(err: BaseException) -> tuple[int, str]:
    """(status, type) of an exception; unknown exceptions are 500 internal_error."""
    if isinstance(err, HTTPException):
        return err.status_code, _HTTP_TYPES.get(err.status_code, "http_error")
    for cls, status, kind in ERROR_TABLE:
        if isinstance(err, cls):
            return status, kind
    return 500, "internal_error"


def _message(err: BaseException) -> str:
    if isinstance(err, RequestValidationError):
        parts = []
        for e in err.errors()[:3]:
            loc = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return "invalid request: " + "; ".join(parts)
    if isinstance(err, HTTPException):
        return str(err.detail)
    return " ".join(str(err).split()) or type(err).__name__


RETRY_AFTER_S = 1


def internal_error_response(err: BaseException) -> JSONResponse:
    """500 `internal_error` with an id that is also in the log line carrying the traceback."""
    error_id = uuid.uuid4().hex[:16]
    logger.error("internal error %s: %s", error_id, type(err).__name__, exc_info=err)
    body = {"error": f"internal server error (id {error_id})", "type": "internal_error", "id": error_id}
    return JSONResponse(body, status_code=500)


def error_response(err: BaseException) -> JSONResponse:
    """The envelope for any exception; 500s are logged with their traceback and an id, the client sees none."""
    status, kind = classify(err)
    if status == 500:
        return internal_error_response(err)
    if status == 503 and kind == "out_of_memory":
        logger.warning("device out of memory: %s", " ".join(str(err).split())[:200])
        message = "the device ran out of memory; retry later"
    else:
        message = _message(err)
    headers: dict[str, str] = {}
    if isinstance(err, HTTPException) and err.headers:
        headers.update(err.headers)  # e.g. Allow on 405
    if status in (429, 503):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": message, "type": kind}, status_code=status, headers=headers or None)

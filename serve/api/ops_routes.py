"""Operational routes: /health (live), /ready (ready), /info, /metrics. None needs the API key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from serve.api.schemas import error_responses
from serve.state import VERSION, AppState, get_state

router = APIRouter()


@router.get("/health", responses=error_responses(405, 500))
async def health(state: AppState = Depends(get_state)) -> dict[str, Any]:
    """Liveness: the process answers. `ready` says whether requests can be served."""
    return {"status": "ok", "ready": state.ready}


@router.get("/ready", responses=error_responses(405, 500, 503))
async def ready(state: AppState = Depends(get_state)) -> dict[str, Any]:
    """Readiness: model and index loaded, batch workers running; 503 otherwise."""
    state.check_ready()
    return {"status": "ready"}


@router.get("/info", responses=error_responses(405, 500))
async def info(state: AppState = Depends(get_state)) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": VERSION,
        "ready": state.ready,
        "limits": state.settings.limits(),
        "auth": bool(state.settings.api_key),
    }
    if state.backend_ is not None:
        out.update(state.backend_.info())
    return out


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
        **error_responses(405, 500),
    },
)
async def metrics(state: AppState = Depends(get_state)) -> PlainTextResponse:
    return PlainTextResponse(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

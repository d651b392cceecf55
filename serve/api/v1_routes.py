"""The /v1 routes: text embeddings (OpenAI-compatible), video embeddings, search.

Each route validates its inputs completely (text items, token ids, video bounds, media type) before
anything joins a batch, admits the work by its size (items for the batchers; a decode slot and the
video's bytes for the decode pool), and answers 429 at once when that is full.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from egovlp.errors import InputError
from serve.api.schemas import (
    TEXT_ERRORS,
    VIDEO_ERRORS,
    VIDEO_OPENAPI_BODY,
    EmbeddingRequest,
    EmbeddingResponse,
    SearchRequest,
    SearchResponse,
    VideoEmbeddingRequest,
    VideoEmbeddingResponse,
)
from serve.api.security import check_api_key
from serve.api.text_inputs import prepare
from serve.api.video_inputs import materialize, materialize_upload
from serve.decode.pool import WindowSpec, check_spec, frames_to_clips
from serve.state import AppState, ClientGone, get_state

CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it, the metrics count it


async def require_key(request: Request, state: AppState = Depends(get_state)) -> None:
    check_api_key(request.headers.get("authorization"), state.settings.api_key)


router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])


def encode(vec: np.ndarray, fmt: str, normalize: bool) -> list[float] | str:
    vec = np.asarray(vec, dtype=np.float32)
    if normalize:
        vec = vec / max(float(np.linalg.norm(vec)), 1e-8)
    if fmt == "base64":
        # OpenAI's base64 format: little-endian float32 bytes
        return base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
    return vec.tolist()


def envelope(
    state: AppState, vectors, fmt: str, normalize: bool, tokens: int, windows=None
) -> dict[str, Any]:
    data = []
    for i, vec in enumerate(vectors):
        item: dict[str, Any] = {"object": "embedding", "index": i, "embedding": encode(vec, fmt, normalize)}
        if windows is not None:
            item["start"], item["end"] = windows[i]
        data.append(item)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": state.backend().name, "usage": usage}


async def token_ids(state: AppState, value, name: str) -> list[list[int]]:
    """Validate and tokenize (off the event loop); every item is checked before it joins a batch."""
    b = state.backend()
    s = state.settings
    return await asyncio.to_thread(
        prepare, value, b.tokenize, b.vocab_size, b.max_tokens, s.max_inputs, s.max_text_chars, name
    )


async def embed_video_file(request: Request, state: AppState, path: str, spec: WindowSpec, name: str):
    """Decode (bounded pool, 429 when full) -> transform -> video batcher; (windows, vectors)."""
    async with state.decode_pool.slot(os.path.getsize(path)):
        # timed from the slot on: the decode stage's own cost, not the wait for a worker
        started = asyncio.get_running_loop().time()
        windows, frames = await state.decode_pool.decode(path, spec, state.settings.decode_timeout_s, name)
    clips = await asyncio.to_thread(frames_to_clips, frames, state.backend().img_size)
    state.metrics.decode_seconds.observe(asyncio.get_running_loop().time() - started)
    return windows, await state.run_batched(request, state.video_batcher, list(clips))


def video_spec(state: AppState, start, end, window, name: str) -> WindowSpec:
    s = state.settings
    spec = WindowSpec(start, end, window, state.backend().num_frames, s.max_video_seconds, s.max_windows)
    check_spec(spec, name)
    return spec


@router.post("/embeddings", response_model=EmbeddingResponse, responses=TEXT_ERRORS)
async def embeddings(body: EmbeddingRequest, request: Request, state: AppState = Depends(get_state)) -> Any:
    b = state.backend()
    if body.dimensions is not None and body.dimensions != b.dim:
        raise InputError(f"dimensions: this model gives {b.dim}-d embeddings, got {body.dimensions}")
    seqs = await token_ids(state, body.input, "input")
    try:
        vectors = await state.run_batched(request, state.text_batcher, seqs)
    except ClientGone:
        return Response(status_code=CLIENT_GONE)
    return envelope(state, vectors, body.encoding_format, body.normalize, sum(len(s) for s in seqs))


def _form_float(form, key: str) -> float | None:
    value = form.get(key)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{key}: expected a number of seconds, got {str(value)[:40]!r}") from None


@router.post(
    "/video/embeddings",
    openapi_extra=VIDEO_OPENAPI_BODY,
    response_model=VideoEmbeddingResponse,
    responses=VIDEO_ERRORS,
)
async def video_embeddings(request: Request, state: AppState = Depends(get_state)) -> Any:
    state.backend()
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
                spec = video_spec(state, *(_form_float(form, k) for k in ("start", "end", "window")), "file")
                with materialize_upload(upload, "file") as path:
                    windows, vectors = await embed_video_file(request, state, path, spec, "file")
                return envelope(state, vectors, fmt, True, 0, windows)
        try:
            body = VideoEmbeddingRequest.model_validate_json(await request.body())
        except ValidationError as err:
            raise RequestValidationError(err.errors(include_url=False, include_context=False)) from None
        spec = video_spec(state, body.start, body.end, body.window, "input")
        with materialize(body.input, state.settings.allowed_roots, "input") as path:
            windows, vectors = await embed_video_file(request, state, path, spec, "input")
        return envelope(state, vectors, body.encoding_format, body.normalize, 0, windows)
    except ClientGone:
        return Response(status_code=CLIENT_GONE)


@router.post("/search", response_model=SearchResponse, responses=VIDEO_ERRORS)
async def search(body: SearchRequest, request: Request, state: AppState = Depends(get_state)) -> Any:
    b = state.backend()
    if (body.query is None) == (body.video is None):
        raise InputError("give exactly one of 'query' (text) or 'video'")
    b.require_index()  # NoIndex before any embedding work
    try:
        if body.query is not None:
            seqs = await token_ids(state, body.query, "query")
            vector = (await state.run_batched(request, state.text_batcher, seqs))[0]
        else:
            spec = video_spec(state, body.start, body.end, None, "video")
            with materialize(body.video, state.settings.allowed_roots, "video") as path:
                vector = (await embed_video_file(request, state, path, spec, "video"))[1][0]
    except ClientGone:
        return Response(status_code=CLIENT_GONE)
    hits = await state.search(vector, body.k)
    return {"results": hits, "model": b.name, "k": body.k}

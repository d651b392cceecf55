"""Pydantic request/response schemas of the HTTP API (the request shapes are a contract, docs/design.md A).

Numbers and flags of the requests are strict: `true` is no number of seconds and `"5"` no k; the
shapes the design gives (ints where seconds are floats included) are accepted as ever.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat


def _no_bool_or_text(value: Any) -> Any:
    # JSON Schema's integer takes 5 and 5.0 but not true or "5"; pydantic's lax int takes all four
    if isinstance(value, bool | str | bytes):
        raise ValueError("expected an integer")
    return value


Integer = Annotated[int, BeforeValidator(_no_bool_or_text)]


class PathInput(BaseModel):
    """A video file on the server, under one of its --allowed-root folders."""

    model_config = ConfigDict(extra="forbid")
    path: str


class EmbeddingRequest(BaseModel):
    """OpenAI-compatible text embeddings; unknown fields (`user`, ...) are ignored as OpenAI does.

    `input` is a text, a list of texts, one list of token ids, or a list of them (ids of the uncased
    BERT vocabulary, used as given: include [CLS]=101 and [SEP]=102 as the tokenizer does).
    """

    model_config = ConfigDict(extra="ignore")
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Integer | None = None
    normalize: StrictBool = Field(
        True, description="L2-normalize (cosine-ready); false gives the raw projection"
    )


class VideoEmbeddingRequest(BaseModel):
    """A video as a `data:video/...;base64,` URL or a server-side path; optional [start, end] and windowing."""

    model_config = ConfigDict(extra="ignore")
    input: str | PathInput
    model: str | None = None
    start: StrictFloat | None = Field(None, ge=0)
    end: StrictFloat | None = Field(None, gt=0)
    window: StrictFloat | None = Field(
        None, gt=0, description="cut [start, end] into windows of this many seconds"
    )
    encoding_format: Literal["float", "base64"] = "float"
    normalize: StrictBool = True


class SearchRequest(BaseModel):
    """Exactly one of `query` (text) or `video` (data URL or server-side path)."""

    model_config = ConfigDict(extra="ignore")
    query: str | None = None
    video: str | PathInput | None = None
    start: StrictFloat | None = Field(None, ge=0)
    end: StrictFloat | None = Field(None, gt=0)
    k: Integer = Field(10, ge=1, le=1000)


class EmbeddingData(BaseModel):
    """OpenAI's embedding object, nothing more."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class VideoEmbeddingData(EmbeddingData):
    """One window of a video: the embedding and the window's [start, end] seconds."""

    start: float
    end: float


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class VideoEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoEmbeddingData]
    model: str
    usage: Usage


class SearchHit(BaseModel):
    model_config = ConfigDict(extra="allow")
    score: float
    clip_uid: str
    video_uid: str
    start: float
    end: float
    video_start: float | None = None
    video_end: float | None = None
    source: str | None = None
    row: int | None = None


class SearchResponse(BaseModel):
    results: list[SearchHit]
    model: str
    k: int


class ErrorResponse(BaseModel):
    error: str
    type: str
    id: str | None = Field(None, description="on 500 only: the id of the log line with the details")


_STATUS_TEXT = {
    400: "invalid input (names the input)",
    401: "missing or wrong API key",
    403: "server-side path outside the allowed roots",
    404: "server-side path not found",
    405: "method not allowed (see Allow)",
    413: "too many bytes, inputs, windows or video seconds",
    415: "wrong Content-Type, or not a video",
    422: "malformed request body, or a video that did not decode in time",
    429: "queue or decoder pool full (see Retry-After)",
    500: "internal error (the id is in the service log)",
    503: "not ready, a worker restarting, or out of device memory (see Retry-After)",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for these error statuses, each with the error envelope."""
    out: dict[int | str, dict] = {}
    for status in statuses:
        entry: dict = {"model": ErrorResponse, "description": _STATUS_TEXT[status]}
        if status in (429, 503):
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
        if status == 405:
            entry["headers"] = {"Allow": {"schema": {"type": "string"}}}
        out[status] = entry
    return out


# what every POST route can answer besides 200 (403/404 only where a server-side path is possible)
TEXT_ERRORS = error_responses(400, 401, 405, 413, 415, 422, 429, 500, 503)
VIDEO_ERRORS = error_responses(400, 401, 403, 404, 405, 413, 415, 422, 429, 500, 503)


# The video route parses its body by hand (JSON or multipart); this is its documented request body.
VIDEO_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["input"],
                    "properties": {
                        "input": {
                            "anyOf": [
                                {"type": "string", "description": "data:video/mp4;base64,..."},
                                {
                                    "type": "object",
                                    "required": ["path"],
                                    "properties": {"path": {"type": "string"}},
                                    "additionalProperties": False,
                                },
                            ]
                        },
                        "model": {"type": "string"},
                        "start": {"type": "number", "minimum": 0},
                        "end": {"type": "number", "exclusiveMinimum": 0},
                        "window": {"type": "number", "exclusiveMinimum": 0},
                        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                        "normalize": {"type": "boolean"},
                    },
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "start": {"type": "number"},
                        "end": {"type": "number"},
                        "window": {"type": "number"},
                        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                    },
                }
            },
        },
    }
}


def tighten_openapi(doc: dict, limits: dict, model: dict | None) -> dict:
    """Publish the limits the routes enforce (text length, inputs per request, token ids, dimensions,
    one of query/video), so schema-valid requests are exactly the ones the service accepts."""
    schemas = doc.get("components", {}).get("schemas", {})
    text = {"type": "string", "minLength": 1, "maxLength": limits["max_text_chars"]}
    embed = schemas.get("EmbeddingRequest")
    if embed is not None:
        vocab = model["vocab_size"] if model else 30522
        max_tokens = model["max_tokens"] if model else 512
        ids = {
            "type": "array",
            "minItems": 1,
            "maxItems": max_tokens,
            "items": {"type": "integer", "minimum": 0, "maximum": vocab - 1},
        }
        many = {"minItems": 1, "maxItems": limits["max_inputs"]}
        embed["properties"]["input"] = {
            "anyOf": [
                text,
                {"type": "array", "items": text, **many},
                ids,
                {"type": "array", "items": ids, **many},
            ],
            "description": EmbeddingRequest.__doc__.split("\n\n")[1].strip()
            if EmbeddingRequest.__doc__
            else "",
        }
        if model:
            embed["properties"]["dimensions"] = {
                "anyOf": [{"type": "integer", "enum": [model["dim"]]}, {"type": "null"}]
            }
    search = schemas.get("SearchRequest")
    if search is not None:
        search["properties"]["query"] = {"anyOf": [text, {"type": "null"}]}
        search["oneOf"] = [
            {"required": ["query"], "properties": {"query": text}},
            {"required": ["video"], "properties": {"video": {"not": {"type": "null"}}}},
        ]
    return doc

"""Pydantic request/response schemas of the HTTP API (request shapes are a DESIGN.md A contract)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PathInput(BaseModel):
    """A video file on the server, under one of its --allowed-root folders."""

    model_config = ConfigDict(extra="forbid")
    path: str


class EmbeddingRequest(BaseModel):
    """OpenAI-compatible text embeddings; unknown fields (`user`, ...) are ignored as OpenAI does."""

    model_config = ConfigDict(extra="ignore")
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    normalize: bool = Field(True, description="L2-normalize (cosine-ready); false gives the raw projection")


class VideoEmbeddingRequest(BaseModel):
    """A video as a `data:video/...;base64,` URL or a server-side path; optional [start, end] and windowing."""

    model_config = ConfigDict(extra="ignore")
    input: str | PathInput
    model: str | None = None
    start: float | None = Field(None, ge=0)
    end: float | None = Field(None, gt=0)
    window: float | None = Field(None, gt=0, description="cut [start, end] into windows of this many seconds")
    encoding_format: Literal["float", "base64"] = "float"
    normalize: bool = True


class SearchRequest(BaseModel):
    """Exactly one of `query` (text) or `video` (data URL or server-side path)."""

    model_config = ConfigDict(extra="ignore")
    query: str | None = None
    video: str | PathInput | None = None
    start: float | None = Field(None, ge=0)
    end: float | None = Field(None, gt=0)
    k: int = Field(10, ge=1, le=1000)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    start: float | None = None
    end: float | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
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

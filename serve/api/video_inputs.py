"""Turn a request's video input (upload, data URL, server-side path) into a local file to decode.

Uploads and data URLs land in a private temporary file that is removed after the request; paths
are confined to the allowed roots. Media types other than video/* (or octet-stream) are a 415.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence

from egovlp.errors import InputError
from serve.api.errors import UnsupportedMedia
from serve.api.schemas import PathInput
from serve.api.security import confine_path

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I
)
_OK_MIME = ("application/octet-stream",)


def check_media_type(mime: str | None, name: str) -> None:
    """415 unless the declared type is a video (or unspecified / octet-stream: the decoder decides)."""
    if mime and not mime.lower().startswith("video/") and mime.lower() not in _OK_MIME:
        raise UnsupportedMedia(f"{name}: media type {mime!r} is not a video")


def decode_data_url(url: str, name: str = "input") -> bytes:
    """`data:video/mp4;base64,....` -> bytes; 415 for a non-video type, 400 for malformed base64."""
    match = _DATA_URL.match(url[:512])
    if not match:
        raise InputError(f'{name}: expected a "data:video/...;base64,..." URL or {{"path": ...}}')
    check_media_type(match.group("mime"), name)
    if not match.group("b64"):
        raise InputError(f"{name}: the data URL must be base64-encoded (';base64,')")
    try:
        data = base64.b64decode(url[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{name}: the data URL's payload is not valid base64") from None
    if not data:
        raise InputError(f"{name}: the data URL is empty")
    return data


@contextlib.contextmanager
def _temp_video(write) -> Iterator[str]:
    fd, path = tempfile.mkstemp(prefix="egovlp-upload-", suffix=".mp4")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def materialize(value: str | PathInput, roots: Sequence[str], name: str = "input") -> Iterator[str]:
    """A JSON video input -> a local path for the duration of the `with` block."""
    if isinstance(value, PathInput):
        yield str(confine_path(value.path, roots))
        return
    data = decode_data_url(value, name)
    with _temp_video(lambda fh: fh.write(data)) as path:
        yield path


@contextlib.contextmanager
def materialize_upload(upload, name: str = "file") -> Iterator[str]:
    """A multipart UploadFile (already spooled by Starlette) -> a local temporary path."""
    check_media_type(getattr(upload, "content_type", None), name)
    upload.file.seek(0)
    with _temp_video(lambda fh: shutil.copyfileobj(upload.file, fh, 1 << 20)) as path:
        if os.path.getsize(path) == 0:
            raise InputError(f"{name}: the uploaded file is empty")
        yield path

"""The one atomic writer: every file the project publishes goes through here.

A temp file is made in the destination's folder (so the rename stays on one filesystem), written,
fsynced, given the mode a plain `open()` would give under the current umask, and renamed over the
destination. On any failure the temp file is removed. A killed process cannot run that cleanup, so
temp names carry the host and pid of their writer: `remove_stale_temps(folder)` deletes the ones whose
writer is gone (on this host), or that are older than a day (another host's, on a shared filesystem).

    with atomic_write(path, "wb") as f: ...           # file object
    with atomic_path(path) as tmp: h5py.File(tmp, "w")  # a path, for libraries that open files themselves
    sink = AtomicFile(path); ...; sink.commit() / sink.abort()
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"
# .{name}.{host}.{pid}.{random}.tmp
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_FOREIGN_TEMP_AGE_S = 24 * 3600.0
# .{name}.{random}.tmp: written by releases before the host/pid names; stale after an hour
_LEGACY_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")
_LEGACY_TEMP_AGE_S = 3600.0

_mode_lock = threading.Lock()
_mode: int | None = None


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file under the process umask (read once, then cached)."""
    global _mode
    if _mode is None:
        with _mode_lock:
            if _mode is None:
                # os.umask can only be read by setting it; done once, under a lock, never at import
                umask = os.umask(0o022)
                os.umask(umask)
                _mode = 0o666 & ~umask
    return _mode


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicFile:
    """A temp file beside `path` that becomes `path` on `commit()` and disappears on `abort()`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp"
        )
        os.close(fd)
        self.tmp = Path(tmp)
        self.done = False

    def commit(self) -> None:
        """fsync the temp file (whoever wrote it has closed it), fix its mode, rename it over `path`."""
        try:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(self.tmp, file_mode())  # mkstemp makes it 0600
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self.done = True
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        if not self.done:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
            self.done = True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path to write `path` through; committed on a clean exit, removed on an error."""
    target = AtomicFile(path)
    try:
        yield target.tmp
    except BaseException:
        target.abort()
        raise
    target.commit()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temp file next to `path` for writing; on success it replaces `path`, on error it is removed."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as handle:
        yield handle


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_json_atomic(obj: Any, path: str | os.PathLike, indent: int | None = None) -> None:
    """json.dump to a temp file in the same folder, then rename over `path`."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=indent)
        if indent is not None:
            handle.write("\n")


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through a temp file; a failed pickle leaves `path` as it was."""
    import torch

    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, recursive: bool = False) -> int:
    """Delete temp files that killed writers left in `folder`; returns how many were removed.

    A temp file of this host is stale when its writer's pid is gone; another host's (a shared
    filesystem) when it is over a day old; one of the older unnamed kind when it is over an hour old.
    """
    root = Path(folder)
    if not root.is_dir():
        return 0
    removed = 0
    now = time.time()
    candidates = root.rglob(".*.tmp") if recursive else root.glob(".*.tmp")
    for path in candidates:
        match = _TEMP_RE.match(path.name)
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if match is None:
            stale = _LEGACY_TEMP_RE.match(path.name) is not None and age > _LEGACY_TEMP_AGE_S
        elif match["host"] == _HOST:
            stale = not _pid_alive(int(match["pid"]))
        else:
            stale = age > _FOREIGN_TEMP_AGE_S
        if stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
                logger.info("removed a killed run's temp file %s", path)
    return removed

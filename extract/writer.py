"""Writing stage: feature rows of one output -> its files, through the feature store's one writer.

NLQ/MQ rows collect in memory (`[T, 256]` is small) and go out on commit through
`egovlp.features.write_clip_features` (arrays, then the sidecar). VQ2D grids stream into an HDF5 temp
file beside the output (`egovlp.io.AtomicFile`; a long clip does not fit in memory), whose attributes
are the sidecar; it is renamed over `{name}.h5` when complete. HDF5 writes through `_WriteGuard`, which
keeps a failed write from HDF5 (see there). A sink's `write` and `commit` raise
OSError on a full or forbidden disk; the caller then calls `abort`, which removes the temp file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from egovlp.features import h5_attrs, write_clip_features
from egovlp.io import AtomicFile

logger = logging.getLogger(__name__)


class FeatureSink:
    """The rows of one NLQ/MQ output; `commit` writes the arrays and then the sidecar."""

    def __init__(self, paths: dict[str, Path], rows: int, dim: int, dim_768: int | None, meta: dict) -> None:
        self.paths, self.meta = paths, meta
        self.features = np.zeros((rows, dim), np.float32)  # [T, 256]
        self.features_768 = np.zeros((rows, dim_768), np.float32) if "features_768" in paths else None

    def write(self, row0: int, outputs: dict[str, np.ndarray]) -> None:
        n = len(outputs["features"])
        self.features[row0 : row0 + n] = outputs["features"]
        if self.features_768 is not None:
            self.features_768[row0 : row0 + n] = outputs["cls_768"]

    def commit(self) -> None:
        write_clip_features(self.paths, self.features, self.features_768, self.meta)

    def abort(self) -> None:
        pass  # nothing on disk until commit; write_clip_features removes its own temps on failure


class _WriteGuard:
    """The file object HDF5 writes through (h5py's fileobj driver). It keeps the first OSError of a
    write (ENOSPC, EIO, ...) for the caller and tells HDF5 every write succeeded: HDF5 that saw a
    failed write cannot close the file, and its cleanup at exit then crashes the process (a segfault
    on a full disk). The file is thrown away when `error` is set, so the lost bytes do not matter."""

    def __init__(self, path: Path) -> None:
        self.raw = open(path, "r+b", buffering=0)  # noqa: SIM115 - closed by close()
        self.error: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += self.raw.write(view[done:])
            except OSError as err:
                self.error = err
        return len(view)

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def readinto(self, buffer) -> int:
        return self.raw.readinto(buffer)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self.raw.truncate(size)
            except OSError as err:
                self.error = err
        return self.raw.tell() if size is None else size

    def flush(self) -> None:
        pass  # unbuffered

    def close(self) -> None:
        self.raw.close()

    def check(self) -> None:
        if self.error is not None:
            raise self.error


class H5Sink:
    """Streams VQ2D grids `[n, h, w, D]` (fp16) into a temp HDF5 file renamed over `path` on commit."""

    def __init__(
        self,
        path: Path,
        rows: int,
        grid: tuple[int, int, int],
        frame_numbers: np.ndarray,
        frame_indices: np.ndarray,
        meta: dict,
    ) -> None:
        import h5py

        self.path, self.rows = path, rows
        self.target = AtomicFile(path)
        self.file = self.guard = None
        try:
            self.guard = _WriteGuard(self.target.tmp)
            self.file = h5py.File(self.guard, "w")
            self.features = self.file.create_dataset(
                "features", shape=(rows, *grid), dtype="float16", chunks=(1, *grid)
            )
            self.file.create_dataset("frame_numbers", data=frame_numbers.astype(np.int64))  # 5 fps frames
            self.file.create_dataset("frame_indices", data=frame_indices.astype(np.int64))  # file frames
            for key, value in h5_attrs(meta).items():
                self.file.attrs[key] = value
            self.file.attrs["complete"] = False
            self.guard.check()
        except BaseException:
            self.abort()
            raise

    def write(self, row0: int, outputs: dict[str, np.ndarray]) -> None:
        grids = outputs["grid"]  # [n, h, w, D]
        self.features[row0 : row0 + len(grids)] = grids.astype(np.float16)
        self.guard.check()

    def commit(self) -> None:
        try:
            self.file.attrs["complete"] = True
            self.file.close()
            self.file = None
            self.guard.close()
            self.guard.check()
            self.target.commit()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close (HDF5 never saw a failed write, so it closes cleanly) and drop the temp file."""
        if self.file is not None:
            with contextlib.suppress(Exception):
                self.file.close()
            self.file = None
        if self.guard is not None:
            with contextlib.suppress(OSError):
                self.guard.close()
        self.target.abort()

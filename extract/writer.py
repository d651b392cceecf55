"""Writing stage: feature rows of one output -> its files, through the feature store's one writer.

NLQ/MQ rows collect in memory (`[T, 256]` is small) and go out on commit through
`egovlp.features.write_clip_features` (arrays, then the sidecar). VQ2D grids stream into an HDF5 temp
file beside the output (`egovlp.io.AtomicFile`; a long clip does not fit in memory), whose attributes
are the sidecar; it is renamed over `{name}.h5` when complete. A sink's `write` and `commit` raise
OSError on a full or forbidden disk; the caller then calls `abort`, which removes the temp file.
"""

from __future__ import annotations

import contextlib
import logging
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
        self.file = None
        try:
            self.file = h5py.File(self.target.tmp, "w")
            self.features = self.file.create_dataset(
                "features", shape=(rows, *grid), dtype="float16", chunks=(1, *grid)
            )
            self.file.create_dataset("frame_numbers", data=frame_numbers.astype(np.int64))  # 5 fps frames
            self.file.create_dataset("frame_indices", data=frame_indices.astype(np.int64))  # file frames
            for key, value in h5_attrs(meta).items():
                self.file.attrs[key] = value
            self.file.attrs["complete"] = False
        except BaseException:
            self.abort()
            raise

    def write(self, row0: int, outputs: dict[str, np.ndarray]) -> None:
        grids = outputs["grid"]  # [n, h, w, D]
        self.features[row0 : row0 + len(grids)] = grids.astype(np.float16)

    def commit(self) -> None:
        try:
            self.file.attrs["complete"] = True
            self.file.flush()
            self.file.close()
            self.file = None
            self.target.commit()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temp file. After a failed write (ENOSPC) HDF5 may fail to flush on close: the
        handle is closed best-effort and the file removed, never written to again."""
        if self.file is not None:
            with contextlib.suppress(Exception):
                self.file.close()
            self.file = None
        self.target.abort()

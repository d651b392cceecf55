"""`egovlp index --features DIR --out INDEX_DIR [--add]`: a FAISS index over extracted clip features.

Input: a folder written by `egovlp extract` (`{name}.pt|.npy` + `{name}.json`, read through
`egovlp.features`); every row is one searchable window. All files must come from the same weights.
The build streams the rows (serve.index.build), the folder layout and the loaded index live in
serve.index.store.
`--add` appends the files not yet indexed, without retraining.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from egovlp.cli_args import OneLineParser
from egovlp.errors import InputError
from egovlp.io import remove_stale_temps
from egovlp.validate import input_dir, output_dir, positive_int
from serve.index.build import KINDS, TARGET_RECALL, build_from_source, fill
from serve.index.features import FeatureFolderSource
from serve.index.rerank import VECTORS_FILE, RerankedIndex, VectorsWriter, copy_vectors
from serve.index.store import (
    FILE_COLUMNS,
    ROWS_FILE,
    RowsWriter,
    SearchIndex,
    gpu_available,
    l2_normalize,
    load_index,
    publish,
)

__all__ = ["SearchIndex", "add_to_index", "build_index", "l2_normalize", "load_index", "main"]
logger = logging.getLogger(__name__)


def build_index(
    features_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    kind: str = "auto",
    nlist: int | None = None,
    use_gpu: bool | None = None,
) -> dict[str, Any]:
    """Build INDEX_DIR from a features folder; returns index.json's content (incl. measured recall)."""
    source = FeatureFolderSource(features_dir)
    if source.count == 0:
        raise InputError(f"{features_dir}: no feature files with sidecars to index")
    out = output_dir(out_dir, "--out")
    remove_stale_temps(out)
    return build_from_source(source, out, kind, nlist, use_gpu, TARGET_RECALL)


def _check_same_weights(source: FeatureFolderSource, info: dict[str, Any], index_dir: Path) -> None:
    for key in ("weights_hash", "config_hash"):
        have, want = source.identity.get(key), info.get(key)
        if want is not None and have != want:
            raise InputError(
                f"{source.items[0].sidecar} and {index_dir / 'index.json'} come from different weights "
                f"({key} {have!r} vs {want!r}); build a new index for these features"
            )


def add_to_index(features_dir: str | os.PathLike, index_dir: str | os.PathLike) -> dict[str, Any]:
    """Append the files of `features_dir` not yet in INDEX_DIR (no retraining); returns the new info."""
    root = Path(index_dir)
    loaded = load_index(root, use_gpu=False)
    source = FeatureFolderSource(
        features_dir, skip=set(loaded.file_names), file_offset=len(loaded.file_names)
    )
    info = dict(loaded.info)
    if source.count == 0:
        return info | {"added": 0}
    if source.dim != loaded.dim:
        raise InputError(f"{features_dir}: feature dim {source.dim} differs from the index's {loaded.dim}")
    _check_same_weights(source, info, root)
    if source.identity.get("precision") != info.get("precision"):
        info["precision"] = None  # rows of mixed precision now, recorded as a build over them would be
    remove_stale_temps(root)
    rows = RowsWriter(root / ROWS_FILE)
    index, vectors = loaded.index, None
    try:
        for batch in loaded.rows.to_batches():  # the old rows, streamed from the memory map
            rows.write_batch(batch)
        if isinstance(index, RerankedIndex):  # a new fp16 rows file: the old rows, then the new ones
            name = info["rerank"].get("file", VECTORS_FILE)
            vectors = VectorsWriter(root / name, index.ntotal + source.count, loaded.dim)
            copy_vectors(index.vectors, vectors)
            index = index.index
        added = fill(index, source.chunks(), rows, vectors=vectors)
    except BaseException:
        rows.abort()
        if vectors is not None:
            vectors.abort()
        raise
    files = {c: loaded.files[c] + source.files[c] for c in FILE_COLUMNS}
    info["count"] = int(loaded.index.ntotal)
    if info.get("kind") != "flat":  # recall was measured on the rows indexed at build time
        info.setdefault("recall_rows", info["count"] - added)
    publish(root, index, rows, files, info, vectors)
    return info | {"added": added}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="egovlp index", description="FAISS index over extracted clip features.")
    parser.add_argument("--features", required=True, help="folder of {name}.pt|.npy + {name}.json sidecars")
    parser.add_argument("--out", required=True, help="index folder to write (INDEX_DIR)")
    parser.add_argument("--add", action="store_true", help="append new files to the existing index at --out")
    parser.add_argument(
        "--kind",
        default="auto",
        choices=KINDS,
        help="auto: exact up to 50k rows, above it IVF + 4-bit PQ re-ranked from fp16 rows on disk (pq_rerank)",
    )
    parser.add_argument(
        "--nlist", type=positive_int, default=None, help="IVF lists (default ~2 sqrt(N), a power of two)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    input_dir(args.features, "--features")
    if args.add:
        out = Path(args.out)
        if not out.is_dir():
            raise InputError(f"--out {out}: no index folder to add to (build it first without --add)")
        info = add_to_index(args.features, out)
    else:
        info = build_index(args.features, args.out, kind=args.kind, nlist=args.nlist)
    summary = dict(info)
    summary["out"] = str(args.out)
    summary["gpu"] = gpu_available()
    print(json.dumps(summary))
    return 0

"""The compute behind the routes: `embed_text`, `embed_video`, `search` over a model and an index.

All three are blocking and run on the service's worker thread (never on the event loop). Inputs
larger than `max_batch` are cut into chunks so a single huge request cannot blow up device memory.
Embeddings come back raw (`[N, D]` float32, as `model.encode_*`); callers L2-normalize for search.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from egovlp.errors import InputError
from serve.errors import NoIndex
from serve.index import SearchIndex, l2_normalize, load_index

logger = logging.getLogger(__name__)


class ModelBackend:
    """An EgoVLP model (+ optional SearchIndex) behind the three service operations."""

    def __init__(
        self, model, index: SearchIndex | None = None, max_batch: int = 32, model_name: str = ""
    ) -> None:
        self.model = model
        self.index = index
        self.max_batch = max_batch
        cfg = model.cfg
        self.name = model_name or cfg.name
        self.dim = int(cfg.projection_dim)
        self.img_size = int(cfg.video.img_size)
        self.num_frames = int(min(4, cfg.video.num_frames))
        self.config_hash = cfg.config_hash()
        if index is not None:
            if index.dim != self.dim:
                raise InputError(f"index dim {index.dim} does not match the model's {self.dim}")
            want = index.info.get("config_hash")
            if want and want != self.config_hash:
                # features from another architecture would give meaningless scores
                raise InputError(f"index config_hash {want} does not match the model's {self.config_hash}")

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens per text for `usage` (with [CLS]/[SEP], after truncation)."""
        return [int(n) for n in self.model.tokenizer(texts)["attention_mask"].sum(1).tolist()]

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """list[str] -> float32 [N, D]."""
        out = [
            self.model.encode_text(texts[i : i + self.max_batch])
            for i in range(0, len(texts), self.max_batch)
        ]
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.dim), np.float32)

    def embed_video(self, clips: list[torch.Tensor]) -> np.ndarray:
        """Normalized clips, each [F, 3, S, S] -> float32 [N, D]."""
        out = []
        for i in range(0, len(clips), self.max_batch):
            batch = torch.stack(clips[i : i + self.max_batch])  # [b, F, 3, S, S]
            out.append(self.model.encode_video(batch))
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.dim), np.float32)

    def search(self, vectors: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """Raw query embeddings [Q, D] -> per query the top-k hits with metadata."""
        if self.index is None:
            raise NoIndex("this server has no index: start it with --index INDEX_DIR")
        return self.index.search(l2_normalize(vectors), k)

    def info(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "dim": self.dim,
            "config_hash": self.config_hash,
            "img_size": self.img_size,
            "num_frames": self.num_frames,
            "device": str(self.model.device),
            "index": None
            if self.index is None
            else {k: v for k, v in self.index.info.items() if k != "files"} | {"rows": len(self.index)},
        }


def load_backend(
    model_path: str, index_dir: str | None = None, device: str | None = None, max_batch: int = 32
) -> ModelBackend:
    """Load model (and index) from local files; the slow part of startup, run off the event loop."""
    import egovlp

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    model = egovlp.load_model(model_path, device=device)
    if device.startswith("cuda"):
        model.autocast_dtype = torch.float16  # fp16 autocast on CUDA only; fp32 on the CPU
    index = load_index(index_dir) if index_dir else None
    logger.info("loaded %s (%s) in %.1f s", model_path, device, time.perf_counter() - start)
    return ModelBackend(model, index, max_batch=max_batch)

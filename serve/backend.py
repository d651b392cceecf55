"""The compute behind the routes: `embed_tokens`, `embed_video`, `search` over a model and an index.

All three are blocking and run on the service's worker thread (never on the event loop). Inputs
larger than `max_batch` are cut into chunks so a single huge request cannot blow up device memory.
Embeddings come back raw (`[N, D]` float32); callers L2-normalize for search.

Precision (docs/design.md D): `--precision` is resolved by `egovlp.precision.resolve_precision` and
the model's weights are cast once (`EgoVLP.set_precision`); bf16 runs on the CPU too. `auto` takes
the precision the index's features were extracted in (index.json) when it can run here, so queries
and rows come from the same numerics; an index of one precision refuses a model running in another
unless `--allow-foreign-index`, as an index of other weights does. `/info` reports what runs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from egovlp.errors import InputError
from egovlp.features import model_identity
from egovlp.precision import Precision, resolve_precision
from serve.api.errors import NoIndex
from serve.index.store import SearchIndex, load_index

logger = logging.getLogger(__name__)


class ModelBackend:
    """An EgoVLP model (+ optional SearchIndex) behind the three service operations."""

    def __init__(
        self,
        model,
        index: SearchIndex | None = None,
        max_batch: int = 32,
        model_name: str = "",
        precision: Precision | str | None = None,
        allow_foreign_index: bool = False,
    ) -> None:
        """`precision`: cast the model to it (a resolved Precision or its name); None keeps the model's."""
        self.model = model
        self.index = index
        self.max_batch = max_batch
        cfg = model.cfg
        self.name = model_name or cfg.name
        self.dim = int(cfg.projection_dim)
        self.img_size = int(cfg.video.img_size)
        self.num_frames = int(min(4, cfg.video.num_frames))
        self.config_hash = cfg.config_hash()
        # hashed before the cast: the hash names the weights as stored, whatever precision they run in
        self.weights_hash = model_identity(model, self.name).weights_hash
        if precision is not None:
            model.set_precision(precision)
        self.precision: str = getattr(model, "precision", "fp32")
        tokenizer = model.tokenizer
        self.vocab_size = int(tokenizer.vocab_size)
        self.max_tokens = int(tokenizer.max_length)
        self.pad_id = int(tokenizer.pad_id)
        if index is not None:
            self._check_index(index, allow_foreign_index)

    def _check_index(self, index: SearchIndex, allow_foreign: bool) -> None:
        if index.dim != self.dim:
            raise InputError(f"--index: dim {index.dim} does not match the model's {self.dim}")
        want = index.info.get("config_hash")
        if want and want != self.config_hash:
            # features from another architecture would give meaningless scores
            raise InputError(f"--index: config_hash {want} does not match the model's {self.config_hash}")
        built = index.info.get("weights_hash")
        if built and built != self.weights_hash:
            if not allow_foreign:
                raise InputError(
                    f"--index: built from other weights (weights_hash {built}) than --model "
                    f"({self.weights_hash}); pass --allow-foreign-index to serve it anyway"
                )
            logger.warning(
                "serving an index built from other weights (%s, model %s)", built, self.weights_hash
            )
        extracted_in = index.info.get("precision")  # None: not recorded, or files of mixed precision
        if extracted_in and extracted_in != self.precision:
            if not allow_foreign:
                raise InputError(
                    f"--index: features extracted in {extracted_in}, the model runs in {self.precision}; "
                    f"pass --precision {extracted_in}, or --allow-foreign-index to serve it anyway"
                )
            logger.warning("serving %s features with a %s model", extracted_in, self.precision)

    def tokenize(self, text: str) -> list[int]:
        """One text -> its token ids with [CLS]/[SEP], truncated to the model's length."""
        return self.model.tokenizer.encode(text)

    def embed_tokens(self, sequences: list[list[int]]) -> np.ndarray:
        """Token-id lists -> float32 [N, D] (padded per chunk of max_batch, as the tokenizer pads)."""
        out = []
        for i in range(0, len(sequences), self.max_batch):
            chunk = sequences[i : i + self.max_batch]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, seq in enumerate(chunk):
                ids[j, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[j, : len(seq)] = 1
            device = self.model.device
            with torch.inference_mode():  # the weights are already in self.precision
                out.append(self.model.embed_text(ids.to(device), mask.to(device)).float())
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.dim), np.float32)

    def embed_video(self, clips: list[torch.Tensor]) -> np.ndarray:
        """Normalized clips, each [F, 3, S, S] -> float32 [N, D]."""
        out = []
        for i in range(0, len(clips), self.max_batch):
            batch = torch.stack(clips[i : i + self.max_batch])  # [b, F, 3, S, S]
            out.append(self.model.encode_video(batch))
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.dim), np.float32)

    def require_index(self) -> SearchIndex:
        if self.index is None:
            raise NoIndex("this server has no index: start it with --index INDEX_DIR")
        return self.index

    def search(self, vectors: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """Raw query embeddings [Q, D] -> per query the top-k hits with metadata (the index normalizes)."""
        return self.require_index().search(vectors, k)

    def info(self) -> dict[str, Any]:
        index = None
        if self.index is not None:
            index = dict(self.index.info) | {"rows": len(self.index)}
        return {
            "model": self.name,
            "dim": self.dim,
            "config_hash": self.config_hash,
            "weights_hash": self.weights_hash,
            "img_size": self.img_size,
            "num_frames": self.num_frames,
            "device": str(self.model.device),
            "precision": {
                "text": self.precision,
                "video": self.precision,
                "index_features": None if index is None else index.get("precision"),
            },
            "index": index,
        }


def load_backend(
    model_path: str,
    index_dir: str | None = None,
    device: str | None = None,
    max_batch: int = 32,
    precision: str = "auto",
    allow_foreign_index: bool = False,
) -> ModelBackend:
    """Load model (and index) from local files; every failure is an InputError naming the flag."""
    import egovlp
    from egovlp.validate import resolve_device

    dev = resolve_device(device)
    resolve_precision(precision, dev)  # a precision this device cannot run fails before the load
    start = time.perf_counter()
    try:
        model = egovlp.load_model(model_path, device=str(dev))
    except InputError as err:
        raise InputError(f"--model {model_path}: {err}") from None
    except Exception as err:  # noqa: BLE001 - a random-bytes file fails deep inside torch/safetensors
        raise InputError(
            f"--model {model_path}: cannot load the model ({type(err).__name__}: {err})"[:300]
        ) from None
    index = None
    if index_dir:
        try:
            index = load_index(index_dir)
        except InputError:
            raise
        except Exception as err:  # noqa: BLE001 - FAISS / Arrow failures on a damaged folder
            raise InputError(
                f"--index {index_dir}: cannot load the index ({type(err).__name__}: {err})"[:300]
            ) from None
    resolved = serving_precision(precision, dev, index)
    logger.info("loaded %s (%s, %s) in %.1f s", model_path, dev, resolved.name, time.perf_counter() - start)
    return ModelBackend(
        model, index, max_batch=max_batch, precision=resolved, allow_foreign_index=allow_foreign_index
    )


def serving_precision(requested: str | None, device: torch.device, index: SearchIndex | None) -> Precision:
    """`--precision` on `device`; `auto` is the index's feature precision when that runs on `device`,
    else egovlp.precision's choice for the device."""
    extracted_in = index.info.get("precision") if index is not None else None
    if requested in (None, "auto") and extracted_in:
        try:
            return resolve_precision(extracted_in, device)
        except InputError:  # fp16 features on a CPU server: the mismatch check names the way out
            pass
    return resolve_precision(requested, device)

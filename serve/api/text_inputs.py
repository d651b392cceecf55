"""Text inputs of the OpenAI-style routes -> validated token-id sequences, before they join a batch.

Every item is checked on its own: a lone UTF-16 surrogate, an empty string, too many characters,
token ids outside the vocabulary. A bad item fails only its own request (400 / 413 naming it); the
batch only ever sees token ids that the model can embed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from egovlp.errors import InputError
from serve.api.errors import TooLarge


def as_items(value: str | Sequence, name: str = "input") -> tuple[list[str | list[int]], bool]:
    """str | [str] | [int] | [[int]] -> (items, each a text or one token-id sequence; single input?)."""
    if isinstance(value, str):
        return [value], True
    items = list(value)
    if not items:
        raise InputError(f"{name}: empty list, nothing to embed")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return [items], True  # one sequence of token ids
    return items, False


def check_text(text: str, name: str, max_chars: int) -> None:
    if not text:
        raise InputError(f"{name}: empty string, nothing to embed")
    if len(text) > max_chars:
        raise TooLarge(f"{name}: {len(text)} characters, the limit is {max_chars}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"{name}: not valid Unicode text (a lone surrogate {text[err.start]!r} at position {err.start})"
        ) from None


def check_ids(ids: Sequence[int], name: str, vocab_size: int, max_tokens: int) -> list[int]:
    if not ids:
        raise InputError(f"{name}: empty token list, nothing to embed")
    if len(ids) > max_tokens:
        raise TooLarge(f"{name}: {len(ids)} tokens, the model takes at most {max_tokens}")
    for j, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab_size:
            raise InputError(f"{name}[{j}]: token id {t!r} is outside the vocabulary (0..{vocab_size - 1})")
    return list(ids)


def prepare(
    value: str | Sequence,
    tokenize: Callable[[str], list[int]],
    vocab_size: int,
    max_tokens: int,
    max_inputs: int,
    max_chars: int,
    name: str = "input",
) -> list[list[int]]:
    """Validate every item and tokenize the texts; returns one token-id list per item."""
    items, single = as_items(value, name)
    if len(items) > max_inputs:
        raise TooLarge(f"{name}: {len(items)} inputs, the limit is {max_inputs} per request")
    out: list[list[int]] = []
    for i, item in enumerate(items):
        label = name if single else f"{name}[{i}]"
        if isinstance(item, str):
            check_text(item, label, max_chars)
            try:
                out.append(list(tokenize(item)))
            except Exception as err:  # noqa: BLE001 - the tokenizer's own refusal names no input
                raise InputError(f"{label}: cannot tokenize ({type(err).__name__})") from None
        else:
            out.append(check_ids(item, label, vocab_size, max_tokens))
    return out

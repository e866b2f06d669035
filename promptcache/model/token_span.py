"""The most characters of text one token can stand for, so that a text too long for the context
is refused before it is tokenized.

If no token covers more than L characters, a text of N characters has at least N / L tokens,
and a text with more than context x L characters cannot fit the context whatever its content:
it is refused without the tokenization (seconds of CPU for megabytes) that would show it.

L is read from the tokenizer itself: the longest entry of its vocabulary, added tokens
included. In a byte-level vocabulary every character of an entry stands for one byte, and a
character is at least one byte; in a SentencePiece-style one `▁` stands for one space and a
byte-fallback entry (`<0x41>`) for one byte; either way an entry's length bounds what it covers.
That holds only if nothing between the text and the vocabulary shrinks the text, so:

- the normalizer must only keep or grow the text (Prepend, Lowercase, NFD, NFKD), or shrink
  it by a known factor (NFC and NFKC compose at most 4 characters into one, as in U+1F8F;
  Replace of a literal by a shorter one, by their ratio);
- the pre-tokenizer must drop nothing (ByteLevel, Metaspace, Digits, and Split or Punctuation
  that keep what they split on);
- an unknown character is not fused with its neighbours into one unknown token.

For anything else (a BERT normalizer drops control characters, a Whitespace pre-tokenizer drops
spaces, a Unigram model fuses unknowns) the bound is None: there is none we can prove, and the
body size limit is the only one. SmolLM2's vocabulary has L = 81 (a run of 80 spaces after a
line break), so its 8,192-token context holds at most 663,552 characters.
"""

from __future__ import annotations

import json
import math

import tokenizers

_KEEPS = {"Prepend", "Lowercase", "NFD", "NFKD"}  # normalizers that never shrink a text
_COMPOSES = {"NFC": 4, "NFKC": 4}  # at most 4 characters composed into one
_SPLITS = {"ByteLevel", "Metaspace", "Digits", "Split", "Punctuation"}


def _component(obj) -> dict | None:
    return None if obj is None else json.loads(obj.__getstate__())


def _shrink(normalizer: dict | None) -> float | None:
    """How many times shorter the normalizer can make a text (None: no bound)."""
    if normalizer is None:
        return 1
    kind = normalizer.get("type")
    if kind == "Sequence":
        factor = 1.0
        for part in normalizer.get("normalizers", []):
            step = _shrink(part)
            if step is None:
                return None
            factor *= step
        return factor
    if kind in _KEEPS:
        return 1
    if kind in _COMPOSES:
        return _COMPOSES[kind]
    if kind == "Replace":
        pattern, content = normalizer.get("pattern", {}).get("String"), normalizer.get("content", "")
        if pattern is None or not content:
            return None  # a regex, or a deletion: no bound
        return max(1.0, len(pattern) / len(content))
    return None


def _keeps_everything(pre: dict | None) -> bool:
    if pre is None:
        return True
    kind = pre.get("type")
    if kind == "Sequence":
        return all(_keeps_everything(p) for p in pre.get("pretokenizers", []))
    return kind in _SPLITS and pre.get("behavior") not in ("Removed", "removed")


def max_chars_per_token(backend: tokenizers.Tokenizer) -> int | None:
    """An upper bound on the characters of text one token of `backend` covers, or None when
    the tokenizer's pipeline admits none (see the module's docstring)."""
    model = backend.model
    if type(model).__name__ != "BPE":
        return None
    if getattr(model, "unk_token", None) and getattr(model, "fuse_unk", False) and not getattr(model, "byte_fallback",
                                                                                               False):
        return None
    shrink = _shrink(_component(backend.normalizer))
    if shrink is None or not _keeps_everything(_component(backend.pre_tokenizer)):
        return None
    longest = max((len(token) for token in backend.get_vocab(with_added_tokens=True)), default=0)
    return math.ceil(longest * shrink) if longest else None

"""Tokenizing a log fast and still exactly: the same ids as the model's tokenizer, memoized.

A tokenizer splits its input at added tokens (`<|im_start|>`, `<|im_end|>`, ...) before
anything else and encodes each piece between them on its own. So a rendered chat prompt's ids
are the concatenation of its pieces' ids, and in a log the pieces repeat: the same system
prompt, the same earlier turns of a growing conversation. `MemoTokenizer.encode` encodes each
distinct piece once.

That equivalence holds for the tokenizers the server loads, but a tokenizer.json may hold a
normalizer or pre-tokenizer that treats the first piece differently. So every `CHECK_EVERY`-th
encode (and the first `CHECK_FIRST`) is compared with the plain full encode; on any difference
memoization is switched off for the rest of the run and `exact_fallback` says so.
"""

from __future__ import annotations

import re
from typing import Any

CHECK_FIRST = 64
CHECK_EVERY = 256
MAX_PIECES = 1_000_000  # memo entries; the memo is emptied when it grows past this


class MemoTokenizer:
    """Wraps a `promptcache.model.tokenizer.Tokenizer` for `ChatRenderer` (same interface)."""

    def __init__(self, tokenizer):
        self.inner = tokenizer
        self.bos_token_id = tokenizer.bos_token_id
        self.chat_template = tokenizer.chat_template
        added = {tok.content: i for i, tok in tokenizer.backend.get_added_tokens_decoder().items()}
        self._added = added
        pattern = "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True))
        self._split = re.compile(f"({pattern})").split if pattern else None
        self._memo: dict[str, list[int]] = {}
        self._calls = 0
        self.exact_fallback = False

    def _pieces(self, text: str) -> list[int]:
        if self._split is None:
            return self.inner.backend.encode(text, add_special_tokens=False).ids
        ids: list[int] = []
        memo, added, backend = self._memo, self._added, self.inner.backend
        for i, piece in enumerate(self._split(text)):
            if i % 2:
                ids.append(added[piece])
            elif piece:
                got = memo.get(piece)
                if got is None:
                    got = backend.encode(piece, add_special_tokens=False).ids
                    if len(memo) >= MAX_PIECES:
                        memo.clear()
                    memo[piece] = got
                ids.extend(got)
        return ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if self.exact_fallback:
            return self.inner.encode(text, add_special_tokens=add_special_tokens)
        self._calls += 1
        ids = self._pieces(text)
        if add_special_tokens and self.inner.add_bos:
            ids = [self.inner.bos_token_id, *ids]
        if self._calls <= CHECK_FIRST or self._calls % CHECK_EVERY == 0:
            if ids != self.inner.encode(text, add_special_tokens=add_special_tokens):
                self.exact_fallback = True
                return self.inner.encode(text, add_special_tokens=add_special_tokens)
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.inner.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tools: Any = None) -> str:
        return self.inner.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tools=tools)

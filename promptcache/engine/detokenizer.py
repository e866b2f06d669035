"""Streaming detokenization: turn generated token ids into text deltas.

Byte-level BPE tokens can end in the middle of a UTF-8 character, so decoding tokens one at a
time would emit replacement characters. We decode a short window of recent tokens and hold text
back while it ends in U+FFFD (as transformers' TextStreamer and vLLM do). Stop strings are
handled here too: text that could still grow into a stop string is held back until it cannot,
so a stop string never reaches the client.
"""

from __future__ import annotations

from promptcache.model.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Owns the text emitted so far for one sequence; `push` returns the next safe delta."""

    def __init__(self, tokenizer: Tokenizer, stop: tuple[str, ...] = (), skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0  # window start: tokens before it are fully emitted
        self._read_offset = 0  # tokens up to here have been turned into text
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._pending = ""  # decoded text not yet emitted (may be the start of a stop string)
        self.stopped = False  # a stop string was found; nothing more will be emitted

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self._ids.append(token_id)
        prefix = self._tokenizer.decode(self._ids[self._prefix_offset:self._read_offset], self._skip_special)
        full = self._tokenizer.decode(self._ids[self._prefix_offset:], self._skip_special)
        if full.endswith(_REPLACEMENT):
            return ""  # an incomplete UTF-8 character: wait for the next token
        if len(full) <= len(prefix):  # no new text (a skipped special token): move on
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return ""
        self._pending += full[len(prefix):]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return self._release()

    def _release(self) -> str:
        for stop in self._stop:
            at = self._pending.find(stop)
            if at >= 0:
                self.stopped = True
                out, self._pending = self._pending[:at], ""
                return out
        cut = len(self._pending) - self._hold
        if cut <= 0:
            return ""
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        """At the end of generation: whatever is held back and is not a stop string."""
        if self.stopped:
            return ""
        out, self._pending = self._pending, ""
        return out

"""Why a prompt misses the cache where it does: the causes /v1/cache/explain can name.

Checked most specific first, each from what the server knows for certain: the cache off, a
prompt below one block, the next block held under another salt or user, expired in the trie or
evicted recently (the engine's eviction record says when and by which policy), a chat template
that re-renders an earlier reply without its reasoning, the same tools listed in another order
than the cached prompt, a timestamp-like value in a system prompt. Otherwise a plain statement
of where the prompt left every cached continuation.
"""

from __future__ import annotations

import re
import time
from array import array
from dataclasses import dataclass, field

from promptcache.cache.divergence import Divergence

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}:\d{2}(:\d{2})?|\b1[6-9]\d{8}\b")


@dataclass
class Miss:
    """What explain learned about one prompt before naming a cause."""

    prompt_tokens: int
    held: int  # cached tokens in the caller's namespace
    block_size: int
    enabled: bool  # the cache is on, for the server and this request
    salted_held: int | None = None  # with a salt or user: cached tokens without them
    edge: Divergence = field(default_factory=Divergence)
    role: str | None = None  # the role of the divergence token
    around: str = ""  # text on both sides of the divergence
    message: int | None = None
    turns: list | None = None
    rendered_text: str | None = None
    tool_names: list[str] = field(default_factory=list)
    ours_block: str = ""  # the prompt's text from just before the divergence, a block or so
    theirs_block: str = ""  # the most similar cached continuation's, from the same place
    lower: dict[str, int] = field(default_factory=dict)  # tokens past memory's prefix per lower tier


def cause(m: Miss) -> str | None:
    """The first cause that applies; None when every full block is cached."""
    if not m.enabled:
        return "the cache is off for this request"
    if m.prompt_tokens < m.block_size:
        return f"the prompt is below one block ({m.prompt_tokens} tokens; blocks are {m.block_size})"
    if m.held >= m.prompt_tokens // m.block_size * m.block_size:
        return None
    if m.salted_held is not None and m.salted_held > m.held:
        return "another salt: more of this prompt is cached without this cache_salt / user"
    if m.lower:
        where = ", ".join(f"{n} in the {tier} tier" for tier, n in m.lower.items())
        return f"in a lower tier: the next tokens are held there ({where}); a request promotes them into memory"
    if m.edge.expired:
        return "expired: the next block was cached, and its time-to-live has passed"
    if m.edge.evicted is not None:
        return f"{m.edge.evicted.describe(time.time())}: the next block was cached"
    reasoning = _dropped_reasoning(m)
    if reasoning:
        return reasoning
    if _tools_reordered(m):
        return ("tools reordered: the cached prompt lists the same tools in another order; keep the tool list in "
                "one fixed order to share its prefix")
    if m.role == "system" and TIMESTAMP.search(m.around):
        return "a timestamp-like value in the system prompt: it changes with every request"
    if m.held == 0:
        return "nothing of this prompt is cached in your namespace (never sent, evicted or expired)"
    return "the prompt differs here from every cached continuation of its prefix"


def _dropped_reasoning(m: Miss) -> str | None:
    """A reply re-rendered otherwise than it was generated: the template dropped its <think>."""
    if m.rendered_text is None or not m.turns:
        return None
    first = m.message or 0
    for i, turn in enumerate(m.turns[first:], first):
        text = turn.text()
        if turn.role == "assistant" and "</think>" in text and text not in m.rendered_text:
            return (f"the chat template drops earlier reasoning (<think>...</think>) from message {i}, so it "
                    "renders differently from when it was generated")
    return None


def _tools_reordered(m: Miss) -> bool:
    """Where the prompt leaves the cache, it names one of this request's tools and the cached
    continuation names another of them: the same tool list, sent in another order."""
    if len(m.tool_names) < 2 or not m.theirs_block:
        return False
    ours, theirs = _first_named(m.ours_block, m.tool_names), _first_named(m.theirs_block, m.tool_names)
    return ours is not None and theirs is not None and ours != theirs


def _first_named(text: str, names: list[str]) -> str | None:
    """The tool whose quoted name starts first in `text` (the longest name where two start at
    the same place); a name cut at the end of a block still counts by its start."""
    found = [(text.find('"' + n), -len(n), n) for n in names if '"' + n in text]
    return min(found)[2] if found else None


def unpack(tokens: bytes) -> list[int]:
    """A trie block's packed token ids as a list."""
    return array("I", tokens).tolist()

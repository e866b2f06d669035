"""Token accounting in neutral terms; each dialect renders it in its own usage shape.

The engine reports prompt tokens and how many of them came from the cache. A dialect with
explicit breakpoints (Anthropic's cache_control) also reports how many tokens its request
wrote to the cache, split by time-to-live; `written` carries that, keyed by TTL label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from promptcache.cache.reusable import reusable_blocks


def reusable_prefix(n_prompt: int, block_size: int) -> int:
    """The most leading tokens of an n_prompt-token prompt that a request can read from the
    cache: every full block short of the last token, which the engine always computes
    (cache/reusable.py, the rule the engine's load applies)."""
    return reusable_blocks(n_prompt, block_size) * block_size


@dataclass(frozen=True)
class TokenUsage:
    prompt: int  # every prompt token, cached or not
    cached: int  # prompt tokens whose KV was read from the cache
    completion: int
    written: dict[str, int] = field(default_factory=dict)  # TTL label -> prompt tokens cached by this request

    @property
    def uncached(self) -> int:
        """Prompt tokens neither read from the cache nor written to it under a breakpoint."""
        return self.prompt - self.cached - sum(self.written.values())

    @property
    def total(self) -> int:
        return self.prompt + self.completion

"""The prefixes most prompts share, counted exactly or, for large logs, with a count-min sketch.

Every full block key of every prompt is counted once per prompt (keys chain, so a key stands
for the whole prefix up to its block). A prefix is reported when at least two prompts share it
and it is maximal: extending it by a block loses some of its sharers. With a sketch, only keys
whose estimate reaches 2 are remembered, so memory follows the shared blocks, not the log; the
counts reported are then estimates that never undercount.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from promptcache.cache.keys import PromptKeys
from promptcache.cache.sketch import CountMinSketch


@dataclass(frozen=True)
class SharedPrefix:
    num_tokens: int
    num_prompts: int  # prompts starting with this prefix (an estimate when sketched)
    example: int  # index of a prompt that starts with it


class _ExactCounts:
    def __init__(self) -> None:
        self.counts: dict[bytes, int] = {}

    def add(self, key: bytes) -> int:
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        return count

    def estimate(self, key: bytes) -> int:
        return self.counts.get(key, 0)


def top_shared_prefixes(prompts: Iterable[PromptKeys], top_n: int = 10,
                        sketch_width: int | None = None) -> list[SharedPrefix]:
    """The `top_n` maximal shared prefixes, most sharers first (exact unless `sketch_width`)."""
    counter = _ExactCounts() if sketch_width is None else CountMinSketch(sketch_width)
    parent: dict[bytes, bytes | None] = {}
    depth: dict[bytes, int] = {}
    example: dict[bytes, int] = {}
    block_size = 1
    for index, keys in enumerate(prompts):
        block_size = keys.block_size
        prev: bytes | None = None
        for b in range(keys.num_blocks):
            key = keys.key(b)
            if counter.add(key) >= 2 and key not in depth:
                parent[key], depth[key], example[key] = prev, b + 1, index
            prev = key
    counts = {key: counter.estimate(key) for key in depth}
    widest_child: dict[bytes, int] = {}
    for key, up in parent.items():
        if up is not None:
            widest_child[up] = max(widest_child.get(up, 0), counts[key])
    shared = [SharedPrefix(depth[key] * block_size, count, example[key])
              for key, count in counts.items() if widest_child.get(key, 0) < count]
    shared.sort(key=lambda p: (-p.num_prompts, -p.num_tokens, p.example))
    return shared[:top_n]

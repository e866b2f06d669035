"""Batch analysis: how much of a batch a prefix cache could reuse, computed without any cache.

`analyze_batch` replays the sequences in order against an unbounded, never-evicting block
prefix cache (a set of block keys) and reports what it would have reused, plus the prefixes
most sequences share. With block_size=1 the figure is exact (token-level); with the engine's
block size it is what the real cache can reach at best, since only full blocks are cached.
Read-only and pure: it builds its own key set and touches no `PrefixCache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from promptcache.cache.keys import Namespace, iter_block_keys, pack_tokens

_ANALYSIS_ROOT = Namespace(model="promptcache/analysis").root_key()


@dataclass(frozen=True)
class SharedPrefix:
    """A prefix that `num_sequences` sequences start with; `example` indexes one of them.

    Only maximal prefixes are listed: extending one by a block would lose some sharers.
    """

    num_tokens: int
    num_sequences: int
    example: int


@dataclass(frozen=True)
class BatchAnalysis:
    num_sequences: int
    total_tokens: int
    reused_tokens: int  # tokens a perfect block-prefix cache would serve, sequences taken in order
    block_size: int
    top_shared: tuple[SharedPrefix, ...]

    @property
    def dedup_ratio(self) -> float:
        """Share of all tokens that would not need computing (0.0 for an empty batch)."""
        return self.reused_tokens / self.total_tokens if self.total_tokens else 0.0

    @property
    def computed_tokens(self) -> int:
        return self.total_tokens - self.reused_tokens


def analyze_batch(sequences: Sequence[Sequence[int]], block_size: int = 16, top_n: int = 10) -> BatchAnalysis:
    """Reuse and sharing figures for `sequences` processed in order (see module docstring)."""
    if block_size < 1:
        raise ValueError("block_size must be at least 1")
    sharers: dict[bytes, int] = {}  # block key -> sequences whose prefix includes it
    parent: dict[bytes, bytes | None] = {}
    depth: dict[bytes, int] = {}
    example: dict[bytes, int] = {}
    total = reused = 0
    for index, tokens in enumerate(sequences):
        total += len(tokens)
        prev: bytes | None = None
        still_cached = True
        for number, (key, _) in enumerate(iter_block_keys(pack_tokens(tokens), block_size, _ANALYSIS_ROOT), 1):
            seen = sharers.get(key)
            if seen is None:
                still_cached = False
                sharers[key], parent[key], depth[key], example[key] = 1, prev, number, index
            else:
                sharers[key] = seen + 1
                if still_cached:
                    reused += block_size
            prev = key
    widest_child: dict[bytes, int] = {}
    for key, up in parent.items():
        if up is not None:
            widest_child[up] = max(widest_child.get(up, 0), sharers[key])
    shared = [
        SharedPrefix(depth[key] * block_size, count, example[key])
        for key, count in sharers.items()
        if count >= 2 and widest_child.get(key, 0) < count
    ]
    shared.sort(key=lambda p: (-p.num_sequences, -p.num_tokens, p.example))
    return BatchAnalysis(len(sequences), total, reused, block_size, tuple(shared[:top_n]))

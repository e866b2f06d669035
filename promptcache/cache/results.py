"""What `PrefixCache.match` and `PrefixCache.insert` hand back."""

from __future__ import annotations

from dataclasses import dataclass, field

from promptcache.cache.keys import BlockKey, Namespace
from promptcache.cache.trie import BlockNode


class Lease:
    """The references a match holds: one per matched node, given back once by `release`."""

    __slots__ = ("nodes", "released")

    def __init__(self, nodes: list[BlockNode]) -> None:
        self.nodes = nodes
        self.released = False


@dataclass(frozen=True)
class PrefixMatch:
    """The longest cached full-block prefix of a prompt, HELD until `PrefixCache.release`.

    `payloads[i]` is the engine's payload for block i (e.g. its KV pool block id); they stay
    valid (never passed to `on_evict`) until the match is released. num_tokens is
    num_blocks * block_size.
    """

    namespace: Namespace
    keys: tuple[BlockKey, ...]
    payloads: tuple[object, ...]
    num_blocks: int
    num_tokens: int
    lease: Lease = field(repr=False, compare=False)

    @property
    def hit(self) -> bool:
        return self.num_blocks > 0


@dataclass(frozen=True)
class InsertResult:
    """How an insert went.

    num_blocks_total: full blocks offered (after num_blocks); of those, num_blocks_new were
    stored now, num_blocks_skipped were not stored (num_blocks_cached = total - skipped are in
    the cache now). reason says why anything was skipped (None when nothing was).
    """

    num_blocks_total: int
    num_blocks_new: int
    num_blocks_skipped: int
    reason: str | None = None

    @property
    def num_blocks_cached(self) -> int:
        return self.num_blocks_total - self.num_blocks_skipped

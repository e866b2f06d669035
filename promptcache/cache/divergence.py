"""Where a prompt leaves the cache, read from the trie: the query behind /v1/cache/explain.

The cache holds whole blocks, so a prompt's cached prefix ends at a block boundary. Past it,
the prompt's next block is compared with every cached continuation of that prefix (the trie
node's children, at most `limit`) to find the exact token where the prompt diverges. The next
block may also still be in the trie but expired, or recently evicted (an `EvictionRecord`
knows when and why). The caller holds whatever lock guards the cache (the engine's).
"""

from __future__ import annotations

import itertools
from array import array
from dataclasses import dataclass

from promptcache.cache.eviction_record import Eviction, EvictionRecord
from promptcache.cache.keys import Namespace
from promptcache.cache.prefix_cache import PrefixCache

MAX_SIBLINGS = 4096  # continuations compared at most (a popular system prompt has many)


@dataclass(frozen=True)
class Divergence:
    shared: int = 0  # tokens of the next block that the most similar cached continuation shares
    expired: bool = False  # the next block is in the trie, its time-to-live passed
    evicted: Eviction | None = None  # the next block was dropped recently, and how
    theirs: bytes = b""  # the most similar cached continuation's tokens (packed), for a diagnosis


def divergence(cache: PrefixCache, tokens: list[int], namespace: Namespace, held: int,
               record: EvictionRecord | None = None, limit: int = MAX_SIBLINGS) -> Divergence:
    """How the prompt `tokens` continues past its `held` cached tokens (a block multiple)."""
    size = cache.block_size
    trie = cache._trie  # the cache layer's own structure, read under the caller's lock
    root = trie.root(namespace.root_key(), namespace.tenant, create=False)
    keys = cache.keys(tokens, namespace)
    nxt = held // size
    evicted = record.lookup(namespace.tenant, keys.key(nxt)) if record is not None and nxt < keys.num_blocks else None
    if root is None:
        return Divergence(evicted=evicted)
    path = trie.walk(root, keys, len(tokens) // size)
    node = path[nxt - 1] if nxt else root
    want = tokens[held:held + size]
    shared, theirs = 0, b""
    for child in itertools.islice(node.children.values(), limit):
        got = array("I", child.tokens)
        n = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
        if n > shared or not theirs:
            shared, theirs = max(shared, n), child.tokens
    return Divergence(shared, len(path) > nxt, evicted, theirs)

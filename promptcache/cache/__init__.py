"""The engine-agnostic prefix cache: block keys, the block trie, eviction, stats, traffic analysis.

Pure Python (stdlib + xxhash): no torch, no I/O. The engine owns KV storage and hands the cache
an opaque payload per block; the cache decides what stays and tells the engine what to free.
"""

from promptcache.cache.config import CacheConfig
from promptcache.cache.errors import PinBudgetExceeded
from promptcache.cache.keys import BlockKey, Namespace, block_keys
from promptcache.cache.prefix_cache import PrefixCache
from promptcache.cache.results import InsertResult, PrefixMatch
from promptcache.cache.stats import CacheStats

__all__ = [
    "BlockKey", "CacheConfig", "CacheStats", "InsertResult", "Namespace", "PinBudgetExceeded", "PrefixCache",
    "PrefixMatch", "block_keys",
]

"""Lower storage tiers for KV blocks: local disk and Redis (or Redis Cluster) under the engine's
memory. docs/tiers.md explains the hierarchy; `config.build_tiers` builds it from options."""

from promptcache.tiers.codec import BlockMeta, CorruptBlock
from promptcache.tiers.config import TierConfig, build_tiers
from promptcache.tiers.hierarchy import TierStack
from promptcache.tiers.store import BlockStore, MemoryStore, StoreUnavailable

__all__ = ["BlockMeta", "BlockStore", "CorruptBlock", "MemoryStore", "StoreUnavailable", "TierConfig",
           "TierStack", "build_tiers"]

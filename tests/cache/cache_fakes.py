"""Fakes shared by the prefix-cache tests (imported as `cache_fakes`): a clock that only moves when told, and a block pool."""

from __future__ import annotations

from promptcache.cache import CacheConfig, Namespace, PrefixCache

NBYTES = 100  # every fake block costs 100 bytes
NS = Namespace(model="llama-3-8b@bf16")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


class FakePool:
    """Hands out payload ids in `store` and checks each comes back through `on_evict` once."""

    def __init__(self) -> None:
        self.next_id = 0
        self.live: set[int] = set()
        self.freed: list[int] = []

    def store(self, block_index: int) -> int:
        self.next_id += 1
        self.live.add(self.next_id)
        return self.next_id

    def on_evict(self, payload: object) -> None:
        assert payload in self.live, f"on_evict({payload}) for a payload not stored or already evicted"
        self.live.remove(payload)
        self.freed.append(payload)


def make_cache(clock: FakeClock | None = None, pool: FakePool | None = None, *, max_blocks_held: int = 1000,
               **config) -> tuple[PrefixCache, FakePool, FakeClock]:
    """A cache with room for `max_blocks_held` blocks of NBYTES, a fake pool and a fake clock.

    Unless a test passes its own `default_tenant_share`, a tenant without a quota may fill the
    whole cache (share 1.0, not CacheConfig's 0.5), so single-tenant tests see the global budget.
    """
    clock = clock or FakeClock()
    pool = pool or FakePool()
    config.setdefault("block_size", 4)
    config.setdefault("max_bytes", max_blocks_held * NBYTES)
    config.setdefault("default_tenant_share", 1.0)
    cache = PrefixCache(CacheConfig(**config), NBYTES, on_evict=pool.on_evict, clock=clock)
    return cache, pool, clock


def blocks(*ids: int, size: int = 4) -> list[int]:
    """Tokens made of whole blocks: block id 7 is [7000, 7001, 7002, 7003]."""
    return [i * 1000 + j for i in ids for j in range(size)]

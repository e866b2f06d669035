"""The engine's cache administration: explain, stats, flush, pins, retained prefixes, tiers.

A part of `Engine` (a mixin): the calls the server's admin and context routes make, from any
thread, while another thread runs `step()`. Each call that reads or changes the trie takes the
Engine's lock, so it never sees a step half done; those that count blocks run the pending saves
first (cache_traffic.py), so every finished request's blocks are counted. The metrics scrape is
the exception: it reads the copy of the stats that `step()` leaves, without the lock.
"""

from __future__ import annotations

import threading

from promptcache.cache.divergence import Divergence
from promptcache.cache.retained import PinLedger
from promptcache.engine.api import CacheOptions, EngineInputError, Request
from promptcache.engine.prefix_reuse import PrefixReuse


class CacheAdmin:
    # Set by Engine.__init__; read here. `_run_saves`: CacheTraffic.
    prefix: PrefixReuse | None
    retained: PinLedger | None
    _lock: threading.RLock
    _stats_snapshot: dict

    # -- reads ---------------------------------------------------------------------------------

    def explain_prefix(self, tokens: list[int], options: CacheOptions) -> tuple[int, Divergence | None]:
        """How many leading tokens of `tokens` the cache holds now in `options`' namespace, and
        how the prompt continues past them (None when every full block is held): the read
        behind /v1/cache/explain, under the engine's lock so the trie it walks is consistent.
        It touches nothing: no lease, no recency, no stats."""
        if self.prefix is None or not options.enabled:
            return 0, None
        with self._lock:
            held = self.prefix.peek(tokens, options)
            if held >= len(tokens) // self.prefix.block_size * self.prefix.block_size:
                return held, None
            return held, self.prefix.divergence(tokens, options, held)

    def explain_tiers(self, tokens: list[int], options: CacheOptions, held: int) -> dict[str, int]:
        """Tokens of `tokens` past memory's `held` that the disk or Redis tiers hold, by tier, as
        a load would find them (existence checks only, no lock: the tiers have their own)."""
        if self.prefix is None:
            return {}
        return self.prefix.lower_tiers(tokens, options, held)

    def cache_stats(self, wait: bool = True) -> dict:
        """The prefix cache's statistics.

        wait=True (admin): takes the engine's lock and runs pending saves first, so every
        finished request's blocks are counted. wait=False (metrics scrapes): the copy taken at
        the end of the last step, read without the lock, so a scrape never stalls a step."""
        if not wait:
            return dict(self._stats_snapshot)
        with self._lock:
            self._run_saves([])  # admin sees every finished request's blocks
            return self._stats_now()

    def _stats_now(self) -> dict:
        """The stats as of now; the caller holds the lock (or owns the engine, as __init__)."""
        if self.prefix is None:
            return {"enabled": False}
        stats = self.prefix.cache.stats.as_dict()
        pool = self.prefix.pool
        stats.update(enabled=True, block_size=self.prefix.block_size, block_nbytes=self.prefix.block_nbytes,
                     max_bytes=pool.num_blocks * self.prefix.block_nbytes)
        if self.prefix.tiers is not None:
            stats.update(self.prefix.tiers.stats())
        return stats

    # -- flush and pins ------------------------------------------------------------------------

    def flush_cache(self, tenant: str | None = None, include_pinned: bool = False) -> int:
        """Drop unheld blocks (of `tenant` only, when given); with include_pinned, pins first."""
        with self._lock:
            self._run_saves([])  # admin sees every finished request's blocks
            if self.prefix is None:
                return 0
            if include_pinned:
                self.retained.forget(tenant)
            return self.prefix.cache.flush(tenant, include_pinned=include_pinned)

    def pin_prefix(self, tokens: list[int], tenant: str, salt: str | None = None) -> int:
        """Pin the cached blocks along `tokens` in (tenant, salt)'s namespace, and keep them in
        the lower tiers with the long TTL; returns blocks pinned (PrefixCache.pin)."""
        return self._pinning(tokens, tenant, salt, pin=True)

    def unpin_prefix(self, tokens: list[int], tenant: str, salt: str | None = None) -> int:
        """Undo one `pin_prefix` along `tokens`; returns blocks unpinned."""
        return self._pinning(tokens, tenant, salt, pin=False)

    def _pinning(self, tokens: list[int], tenant: str, salt: str | None, *, pin: bool) -> int:
        with self._lock:
            self._run_saves([])  # admin sees every finished request's blocks
            if self.prefix is None:
                return 0
            namespace = self.prefix.namespace(CacheOptions(tenant=tenant, salt=salt))
            cache = self.prefix.cache
            if not pin:
                return cache.unpin(tokens, namespace)
            pinned = cache.pin(tokens, namespace)
            self.prefix.pin_to_tiers(tokens, CacheOptions(tenant=tenant, salt=salt))
            return pinned

    # -- retained prefixes (cache/retained.py) -------------------------------------------------

    def reserve_retained(self, request: Request) -> int:
        """Admit `request`'s prefix for its `pin_owner` now, counting the blocks already pinned
        along it (a trie walk, hence the lock); `add_request` then finds it reserved. Raises
        PinBudgetExceeded. Returns the blocks reserved."""
        options = request.cache
        if self.retained is None or options.pin_owner is None or not options.enabled:
            raise EngineInputError("retaining a prefix needs the prefix cache", "prompt")
        with self._lock:
            pinned = self.prefix.cache.pinned_blocks(request.prompt_tokens, self.prefix.namespace(options))
            return self.retained.reserve(request.request_id, options.pin_owner, options.tenant,
                                         len(request.prompt_tokens), pinned)

    def release_retained(self, owner: str) -> int:
        """Unpin what `owner` retains (blocks stay cached as ordinary entries); returns blocks."""
        if self.retained is None:
            return 0
        with self._lock:
            return self.retained.release(owner)

    def retained_blocks(self, owner: str) -> int:
        """How many blocks `owner` keeps pinned now (0 after a restart, until retained again);
        runs the pending saves first, so a finished request's pin is counted."""
        if self.retained is None:
            return 0
        with self._lock:
            self._run_saves([])
            held = self.retained.held(owner)
        return held.blocks if held is not None else 0

    # -- lower storage tiers (promptcache.tiers) -----------------------------------------------

    def attach_tiers(self, tiers) -> None:
        """Put disk/Redis tiers (a `TierStack`) under the prefix cache; before serving only."""
        if self.prefix is None:
            raise ValueError("storage tiers need the prefix cache (it is switched off)")
        self.prefix.tiers = tiers

    def close_tiers(self, timeout_s: float = 10.0) -> bool:
        """Run pending saves, then drain the tiers' write-behind queue (graceful shutdown)."""
        if self.prefix is None or self.prefix.tiers is None:
            return True
        with self._lock:
            self._run_saves([])
        return self.prefix.tiers.close(timeout_s)

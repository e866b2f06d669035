"""Retained prefixes: pins that belong to an owner, admitted before their KV is computed.

A plain `PrefixCache.pin` can only pin blocks that are cached already, so "prefill, then pin"
leaves a window in which the new blocks can be evicted. A retained prefix closes it:

    ledger.reserve(request_id, owner, tenant, blocks)   # admission, before any KV is computed
    ... the prefill runs; its save inserts the blocks ...
    ledger.commit(owner, tokens, namespace)             # same engine step as the insert: pinned
    ledger.settle(request_id)                           # the request is over: reservation gone
    ledger.release(owner)                               # unpinned: ordinary cache entries again

`reserve` counts the tenant's pinned blocks plus every open reservation against the pin budget
(`pins.py`) and raises PinBudgetExceeded, reserving nothing, when the new blocks do not fit;
so a refused prefix costs no compute and evicts nothing. `commit` pins the owner's new path and
then unpins its previous one (a session moving on to its next turn keeps the shared blocks
pinned throughout, pins nest). A commit that finds the budget taken meanwhile pins the longest
leading part that fits. One owner holds one path.

Thread-safety: `reserve`, `settle` and the read-only methods take the ledger's own lock and
touch only counts; `commit` and `release` walk the trie and must run where the cache's other
mutations run (the engine's step lock), and take the ledger's lock too.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from promptcache.cache.keys import Namespace
from promptcache.cache.prefix_cache import PrefixCache


@dataclass(frozen=True)
class Reservation:
    owner: str
    tenant: str
    blocks: int


@dataclass(frozen=True)
class Held:
    """The path an owner keeps pinned: `blocks` leading blocks of `tokens` in `namespace`."""

    tokens: tuple[int, ...]
    namespace: Namespace
    blocks: int


class PinLedger:
    def __init__(self, cache: PrefixCache) -> None:
        self._cache = cache
        self._pins = cache.pin_budget
        self._reserved: dict[str, Reservation] = {}  # request id -> reservation
        self._held: dict[str, Held] = {}  # owner -> its pinned path
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ admission

    def _reserved_blocks(self, tenant: str | None, skip: str | None = None) -> int:
        return sum(r.blocks for rid, r in self._reserved.items()
                   if rid != skip and (tenant is None or r.tenant == tenant))

    def reserve(self, request_id: str, owner: str, tenant: str, tokens: int, pinned: int = 0) -> int:
        """Admit `tokens` tokens of prefix for `owner` before computing them; returns the blocks
        reserved. Blocks the owner holds already, or the `pinned` leading blocks the caller saw
        pinned (by any owner), are not counted again: a session's next turn pays only for its
        growth, a second session over the same document only for what differs. Raises
        PinBudgetExceeded, reserving nothing. Reserving again for a request is a no-op."""
        with self._lock:
            if request_id in self._reserved:
                return self._reserved[request_id].blocks
            held = self._held.get(owner)
            blocks = max(0, tokens // self._cache.block_size - max(pinned, held.blocks if held else 0))
            self._pins.check_with(tenant, blocks, self._reserved_blocks(tenant), self._reserved_blocks(None))
            self._reserved[request_id] = Reservation(owner, tenant, blocks)
            return blocks

    def settle(self, request_id: str) -> None:
        """The reserving request is over (finished, aborted or failed): drop its reservation."""
        with self._lock:
            self._reserved.pop(request_id, None)

    def owner_of(self, request_id: str) -> str | None:
        with self._lock:
            reservation = self._reserved.get(request_id)
            return reservation.owner if reservation else None

    # ------------------------------------------------------------- pins themselves

    def commit(self, request_id: str | None, owner: str, tokens: Sequence[int], namespace: Namespace) -> int:
        """Pin the cached blocks along `tokens` for `owner` (as many leading ones as the budget
        allows, counting the other open reservations), then release the owner's previous path.
        Returns the number of blocks the owner now holds."""
        cache = self._cache
        with self._lock:
            tenant = namespace.tenant
            cached = cache.peek(tokens, namespace)
            already = cache.pinned_blocks(tokens, namespace)
            room = self._pins.room_with(tenant, self._reserved_blocks(tenant, request_id),
                                        self._reserved_blocks(None, request_id))
            blocks = min(cached, already + room)
            previous = self._held.pop(owner, None)
            kept = tuple(tokens[: blocks * cache.block_size])
            if blocks:
                cache.pin(kept, namespace)
                self._held[owner] = Held(kept, namespace, blocks)
            if previous is not None:
                cache.unpin(previous.tokens, previous.namespace)
            return blocks

    def release(self, owner: str) -> int:
        """Unpin the owner's path (its blocks become ordinary, evictable entries); returns how
        many blocks it held (0 for an unknown owner)."""
        with self._lock:
            held = self._held.pop(owner, None)
            if held is None:
                return 0
            self._cache.unpin(held.tokens, held.namespace)
            return held.blocks

    def forget(self, tenant: str | None = None) -> None:
        """After a flush that dropped pins wholesale: forget the owners (of `tenant`) without
        unpinning, since their pins are gone already."""
        with self._lock:
            for owner in [o for o, h in self._held.items() if tenant is None or h.namespace.tenant == tenant]:
                del self._held[owner]

    def held(self, owner: str) -> Held | None:
        with self._lock:
            return self._held.get(owner)

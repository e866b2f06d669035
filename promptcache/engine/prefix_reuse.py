"""Glue between the pure-Python prefix cache (structure, policy) and the KV block pool (bytes).

`load` finds the longest cached prefix of a sequence's prompt and copies its KV into the
sequence's slot; `save` inserts a sequence's completed blocks, copying new ones into the pool.

With lower tiers attached (`promptcache.tiers`), a load that misses memory continues into them
block by block and promotes what it finds into the pool (then reads it as a memory hit), and a
save also queues its new blocks for the tiers in the background. Restored blocks are the bytes
a prefill computed, checked by `decode`, so the bitwise guarantee below holds for them too.

Bitwise reuse: a prefill row's result does not depend on the chunk it is computed in (prefill
attention runs on a fixed grid, model/attention.py; products of MIN_ROWS rows or more measured
row-invariant, and a shorter chunk runs padded to MIN_ROWS rows, model/llama.py), so the suffix
computed after a hit is bitwise the row a cold run computes, however short. A hit therefore
reuses every full block short of the last token (cache/reusable.py, the rule the reported
usage and the router share; docs/design.md).

Prompt logprobs are side data of the blocks (logprobs_store.py): `load_scored` reuses only the
leading blocks that hold them, and `save` with `side` fills them into every saved block,
new or already cached, and writes those blocks to the lower tiers with them.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy
import torch

from promptcache.cache.budget import capacity_blocks
from promptcache.cache.config import CacheConfig
from promptcache.cache.divergence import Divergence, divergence
from promptcache.cache.eviction_record import EvictionRecord
from promptcache.cache.keys import Namespace, PromptKeys
from promptcache.cache.policies import TIER_RANK
from promptcache.cache.prefix_cache import PrefixCache
from promptcache.cache.results import PrefixMatch
from promptcache.cache.reusable import reusable_blocks
from promptcache.engine.api import CacheOptions, Role
from promptcache.engine.block_pool import BlockPool, kv_block_nbytes
from promptcache.engine.logprobs import empty_records
from promptcache.engine.logprobs_store import PromptLogprobStore, side_nbytes
from promptcache.tiers.codec import BlockMeta, WithSide, side_of
from promptcache.tiers.hierarchy import TierStack

# What a pinned prefix or a "24h" retention keeps in the lower tiers.
PIN_TTL_S = 86_400.0


def block_roles(token_roles: Seq[Role] | None, num_blocks: int, block_size: int) -> list[str]:
    """One role per full block. A block that spans a role boundary takes the most durable role
    among its tokens (the tier policy's rank): every later turn that needs that text needs it."""
    if token_roles is None:
        return ["user"] * num_blocks
    roles = []
    for b in range(num_blocks):
        span = token_roles[b * block_size:(b + 1) * block_size] or ["user"]
        distinct = set(span)  # most blocks hold one role: no per-token ranking (analyze replays millions)
        if len(distinct) == 1:
            roles.append(span[0])
        else:
            roles.append(max(span, key=lambda r: TIER_RANK.get(r, TIER_RANK["user"])))
    return roles


class PrefixReuse:
    def __init__(self, config: CacheConfig, *, model_id: str, layers: int, kv_heads: int, head_dim: int,
                 kv_dtype: torch.dtype, device: torch.device):
        self.model_id = model_id
        self.block_size = config.block_size
        nbytes = kv_block_nbytes(layers=layers, kv_heads=kv_heads, block_size=config.block_size, head_dim=head_dim,
                                 dtype=kv_dtype)
        # What one cached block costs the budget: its KV and the room for its prompt logprobs.
        self.block_nbytes = nbytes + side_nbytes(config.block_size)
        num_blocks = capacity_blocks(config.max_bytes, config.max_blocks, self.block_nbytes)
        self.pool = BlockPool(num_blocks, layers=layers, kv_heads=kv_heads, block_size=config.block_size,
                              head_dim=head_dim, dtype=kv_dtype, device=device)
        self.side = PromptLogprobStore(num_blocks, config.block_size)
        self.cache = PrefixCache(config, self.block_nbytes, on_evict=self._free)
        # Recent evictions per tenant, so that /v1/cache/explain can say when and why a block went.
        self.evictions = EvictionRecord(config.policy)
        self.cache.add_evict_listener(self.evictions)
        self.tiers: TierStack | None = None
        # Where the last load's blocks came from, in prompt order: tier name -> tokens ("memory"
        # for blocks already there). Set by every load under the engine's lock, read right after.
        self.last_sources: dict[str, int] = {}
        self._dtype_name = str(kv_dtype).removeprefix("torch.")

    def _free(self, block_id: int) -> None:
        """An evicted block's bytes go back to the pool, its side data with them."""
        self.side.clear(block_id)
        self.pool.free(block_id)

    def _metas(self, keys: PromptKeys, start: int, stop: int) -> list[BlockMeta]:
        shape = self.pool.block_shape
        return [BlockMeta(self.model_id, self._dtype_name, shape, keys.key(i), keys.block(i))
                for i in range(start, stop)]

    def namespace(self, options: CacheOptions) -> Namespace:
        return Namespace(model=self.model_id, tenant=options.tenant, salt=options.salt)

    def prompt_keys(self, tokens: list[int], options: CacheOptions) -> PromptKeys:
        """The prompt's block keys, for a sequence to keep: its peeks, load and save then hash
        each block once. peek, load and save take these or plain token lists."""
        return self.cache.keys(tokens, self.namespace(options))

    def divergence(self, tokens: list[int], options: CacheOptions, held: int) -> Divergence:
        """How `tokens` continue past their `held` cached tokens (caller holds the engine's lock)."""
        return divergence(self.cache, tokens, self.namespace(options), held, self.evictions)

    def lower_tiers(self, tokens: list[int], options: CacheOptions, held: int) -> dict[str, int]:
        """Tokens past memory's `held` that the lower tiers hold, by tier (existence only)."""
        if self.tiers is None or not options.enabled:
            return {}
        keys = self.cache.keys(tokens, self.namespace(options))
        counts = self.tiers.held(self._metas(keys, held // self.block_size, keys.num_blocks))
        return {name: n * self.block_size for name, n in counts.items()}

    def peek(self, prompt: list[int] | PromptKeys, options: CacheOptions) -> int:
        """Tokens a load would reuse now, without taking a lease (for cache-aware scheduling)."""
        if not options.enabled:
            return 0
        return self.cache.peek(prompt, self.namespace(options)) * self.block_size

    def load(self, prompt: list[int] | PromptKeys, options: CacheOptions, kv: torch.Tensor, slot: int) -> int:
        """Copy the longest usable cached prefix into `slot`; returns the number of tokens."""
        if not options.enabled:
            return 0
        match, restored = self._match(prompt, options)
        try:
            n = match.num_blocks
            self.pool.read(list(match.payloads[:n]), kv, slot)
        finally:
            self.cache.release(match)  # the slot now holds its own copy
        self.last_sources = self._sources(n, restored)
        return n * self.block_size

    def _match(self, prompt: list[int] | PromptKeys, options: CacheOptions) -> tuple[PrefixMatch, dict]:
        """The cached prefix of the prompt's reusable blocks (every full block short of the last
        token, cache/reusable.py), after promoting into memory what lower tiers hold of them;
        with what `_restore` reports. The caller releases the match."""
        max_blocks = reusable_blocks(len(prompt), self.block_size)
        restored = {} if self.tiers is None else self._restore(prompt, options, max_blocks)
        return self.cache.match(prompt, self.namespace(options), max_blocks=max_blocks), restored

    def _sources(self, n: int, restored: dict) -> dict[str, int]:
        """Tokens of an n-block hit by the tier that held them: the restored blocks are the
        last ones of the hit (memory held the prefix before them), in tier order."""
        promoted = dict(restored.get("sources") or {})
        in_memory = max(0, n - sum(promoted.values()))
        if restored:
            in_memory = min(n, restored["have"])
        out, left = {"memory": in_memory * self.block_size}, n - in_memory
        for name, count in promoted.items():
            take = min(count, left)
            out[name] = take * self.block_size
            left -= take
        return out

    def load_scored(self, prompt: list[int] | PromptKeys, options: CacheOptions, kv: torch.Tensor,
                    slot: int) -> tuple[int, numpy.ndarray]:
        """`load` for a request that wants prompt logprobs: only the leading blocks that hold
        them are reused. Returns the number of tokens and their logprob records."""
        if not options.enabled:
            return 0, empty_records(0)
        match, restored = self._match(prompt, options)
        try:
            scored = 0
            while scored < match.num_blocks and self.side.has(match.payloads[scored]):
                scored += 1
            ids = list(match.payloads[:scored])
            self.pool.read(ids, kv, slot)
            records = self.side.get(ids)
        finally:
            self.cache.release(match)
        self.last_sources = self._sources(len(ids), restored)
        return len(ids) * self.block_size, records

    def _restore(self, prompt: list[int] | PromptKeys, options: CacheOptions, wanted: int) -> dict:
        """Promote into memory the blocks past memory's prefix that the lower tiers hold, up to
        `wanted` blocks in all; returns {"have": blocks memory held before, "sources": blocks
        promoted per tier} (empty when memory held them all)."""
        namespace = self.namespace(options)
        keys = self.cache.keys(prompt, namespace)
        have = self.cache.peek(keys, namespace)
        if have >= wanted:
            return {}
        payloads, sources = self.tiers.fetch_counted(self._metas(keys, have, wanted))
        if not payloads:
            return {"have": have, "sources": {}}

        def store(index: int) -> int:
            block_id = self.pool.allocate()
            try:
                kv_bytes, side = side_of(payloads[index - have], self.pool.block_nbytes)
                self.pool.write_block_bytes(block_id, kv_bytes)
                self.side.put_bytes(block_id, side)
            except BaseException:
                self._free(block_id)
                raise
            return block_id

        self.cache.insert(keys, namespace, store, ttl_s=options.ttl_s, num_blocks=have + len(payloads))
        return {"have": have, "sources": sources}

    def write_through(self, keys: PromptKeys, first: int, block_ids: list[int], ttl_s: float | None) -> None:
        """Queue blocks first, first + 1, ... (in the pool at `block_ids`) for the lower tiers."""
        if self.tiers is not None and block_ids:
            values = [WithSide(kv_bytes, self.side.to_bytes(block_id))
                      for kv_bytes, block_id in zip(self.pool.block_bytes(block_ids), block_ids)]
            self.tiers.write(self._metas(keys, first, first + len(block_ids)), values, ttl_s)

    def pin_to_tiers(self, tokens: list[int], options: CacheOptions) -> None:
        """Write a pinned prefix's cached blocks to the lower tiers with the long retention TTL."""
        if self.tiers is None:
            return
        namespace = self.namespace(options)
        match = self.cache.match(tokens, namespace)
        try:
            self.write_through(self.cache.keys(tokens, namespace), 0, list(match.payloads), PIN_TTL_S)
        finally:
            self.cache.release(match)

    def save(self, tokens: list[int] | PromptKeys, options: CacheOptions, kv: torch.Tensor, slot: int,
             roles: list[str], side: numpy.ndarray | None = None) -> int:
        """Insert the full blocks of `tokens` (whose KV is in `slot`); returns blocks stored.
        `side`: the logprob records of the leading tokens, kept with the blocks they fill."""
        if not options.enabled:
            return 0
        new: list[tuple[int, int]] = []  # (block index, pool id)

        def store(index: int) -> int:
            block_id = self.pool.allocate()
            new.append((index, block_id))
            return block_id

        namespace = self.namespace(options)
        try:
            # A prefix about to be pinned makes room from its own tenant's blocks only.
            self.cache.insert(tokens, namespace, store, roles=roles, ttl_s=options.ttl_s,
                              own_room_only=options.pin_owner is not None)
            self._extend_segments(tokens, namespace, options)
            if new:
                # An insert extends the cached path from where it stopped matching, so the new
                # blocks are one run of consecutive indices: one copy out of the slot.
                first = new[0][0]
                assert [index for index, _ in new] == list(range(first, first + len(new)))
                self.pool.write([block_id for _, block_id in new], kv, slot, first)
        except BaseException:
            # The trie took the new blocks before their bytes were copied: drop them (the pool
            # gets their ids back), or a later request would hit KV that was never written.
            if new:
                self.cache.remove(tokens, namespace, num_blocks=new[0][0] + 1)
            raise
        keys = self.cache.keys(tokens, namespace)
        filled = [] if side is None else self._fill_side(keys, namespace, side, {i for i, _ in new})
        if new:
            self.write_through(keys, new[0][0], [block_id for _, block_id in new], options.ttl_s)
        for index, block_id in filled:  # cached before without logprobs: written again with them
            self.write_through(keys, index, [block_id], options.ttl_s)
        return len(new)

    def _extend_segments(self, tokens: list[int] | PromptKeys, namespace: Namespace, options: CacheOptions) -> None:
        """Give each leading segment its own, longer lifetime: a TTL only ever extends, so the
        blocks before each segment's end are touched again with its TTL (no block is added)."""
        if not options.ttl_segments:
            return
        held = self.cache.peek(tokens, namespace)

        def no_new_block(index: int) -> int:
            raise AssertionError("a segment's blocks are already cached")

        for end, ttl_s in options.ttl_segments:
            blocks = min(end // self.block_size, held)
            if blocks and (options.ttl_s is None or ttl_s > options.ttl_s):
                self.cache.insert(tokens, namespace, no_new_block, ttl_s=ttl_s, num_blocks=blocks)

    def _fill_side(self, keys: PromptKeys, namespace: Namespace, side: numpy.ndarray,
                   new: set[int]) -> list[tuple[int, int]]:
        """Give every cached block along `keys` that `side` covers and that lacks them its
        records; returns (block index, pool id) of the blocks that were cached already."""
        bs, filled = self.block_size, []
        for index, block_id in enumerate(self.cache.payloads(keys, namespace)[:len(side) // bs]):
            if not self.side.has(block_id):
                self.side.put(block_id, side[index * bs:(index + 1) * bs])
                if index not in new:
                    filled.append((index, block_id))
        return filled

"""Replaying a recorded stream of prompts through `PrefixCache`, without a model.

This is the cache the server runs, driven as the engine drives it: for each prompt, `match`
capped at one token short of the prompt (the engine always computes the last token and
nothing more, cache/reusable.py; `min_computed` asks what a longer computed tail would cost),
then `insert` of every full block with the blocks' roles and the request's time on an injected
clock. Payloads are None; nothing but the index is simulated. With several replicas each has
its own cache of the configured size, and a router picks one per request:

- random: uniformly at random, seeded;
- prefix: the replica holding the longest cached prefix (`peek`), ties broken by the prompt's
  first block key, so requests sharing an opening block go to the same replica when none has
  more (what a prefix-aware load balancer does).

Pure: no I/O, no torch; the caller owns the PromptKeys and may reuse them across replays
(each key is hashed once).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from promptcache.cache.config import CacheConfig
from promptcache.cache.keys import TOKEN_NBYTES, Namespace, PromptKeys, chain_key
from promptcache.cache.prefix_cache import PrefixCache
from promptcache.cache.reusable import reusable_blocks

ROUTINGS = ("random", "prefix")


class HashedPromptKeys(PromptKeys):
    """PromptKeys with every block and key computed up front, for a prompt replayed many times:
    each replay then walks lists instead of slicing and hashing. The packed buffer is dropped."""

    def __init__(self, tokens: Sequence[int], namespace: Namespace, block_size: int):
        super().__init__(tokens, namespace, block_size)
        step = block_size * TOKEN_NBYTES
        packed = self.packed
        self._blocks = [packed[i * step:(i + 1) * step] for i in range(self.num_blocks)]
        parent = self.root
        for block in self._blocks:
            parent = chain_key(parent, block)
            self._keys.append(parent)
        self.packed = b""

    def block(self, index: int) -> bytes:
        return self._blocks[index]

    def key(self, index: int):
        return self._keys[index]


@dataclass(frozen=True)
class ReplayItem:
    keys: PromptKeys  # the prompt's tokens and block keys, in its namespace
    roles: Sequence[str]  # eviction tier of each full block
    at: float  # seconds on the log's clock


@dataclass(frozen=True)
class ReplayResult:
    requests: int
    prompt_tokens: int
    hit_tokens: int  # prompt tokens served from the cache
    peak_blocks: int  # most blocks held at once, all replicas together
    replica_requests: tuple[int, ...]

    @property
    def hit_ratio(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def _clock():
    now = [0.0]
    return now, lambda: now[0]


def replay(items: Sequence[ReplayItem], config: CacheConfig, block_nbytes: int, *, replicas: int = 1,
           routing: str = "random", seed: int = 0, min_computed: int = 1,
           hits_out: list[int] | None = None) -> ReplayResult:
    """Replay `items` in order; `hits_out`, when given, receives each request's hit tokens."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    if routing not in ROUTINGS:
        raise ValueError(f"unknown routing {routing!r}; choose from {', '.join(ROUTINGS)}")
    now, clock = _clock()
    caches = [PrefixCache(config, block_nbytes, clock=clock) for _ in range(replicas)]
    rng = random.Random(seed)
    bs = config.block_size
    counts = [0] * replicas
    total = hit = peak = 0
    for item in items:
        keys = item.keys
        now[0] = item.at
        if replicas == 1:
            cache = caches[0]
            counts[0] += 1
        else:
            index = _route(caches, keys, routing, rng)
            cache = caches[index]
            counts[index] += 1
        match = cache.match(keys, keys.namespace, max_blocks=(len(keys) - 1) // bs)
        cache.release(match)
        cache.insert(keys, keys.namespace, _no_payload, roles=item.roles)
        usable = min(match.num_blocks, reusable_blocks(len(keys), bs, min_computed))
        total += len(keys)
        hit += usable * bs
        if hits_out is not None:
            hits_out.append(usable * bs)
        held = sum(len(c) for c in caches) if replicas > 1 else len(cache)
        peak = max(peak, held)
    return ReplayResult(len(items), total, hit, peak, tuple(counts))


def _no_payload(index: int) -> None:
    return None


def _route(caches: list[PrefixCache], keys: PromptKeys, routing: str, rng: random.Random) -> int:
    if routing == "random":
        return rng.randrange(len(caches))
    cached = [c.peek(keys, keys.namespace) for c in caches]
    best = max(cached)
    tied = [i for i, n in enumerate(cached) if n == best]
    if len(tied) == 1:
        return tied[0]
    anchor = int.from_bytes(keys.key(0)[:8], "little") if keys.num_blocks else len(keys)
    return tied[anchor % len(tied)]

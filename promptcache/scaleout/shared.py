"""What the replicas share through the storage tiers' Redis, seen from the ingress.

- `SharedBlocks.leading(keys)`: how many leading blocks of a prompt the Redis tier holds. Those
  are reachable from every replica (any of them fetches and promotes them), so the router
  counts them for all. One pipelined EXISTS per block, on a short timeout; a Redis that does not
  answer counts as holding nothing (the replicas' own tier breaker decides about reads).
- `ClusterTenantLimit`: each tenant's requests in flight, counted in Redis so that the
  per-tenant limit holds across every ingress process, not per process. Each slot is one
  member of a sorted set scored by its expiry, so a slot left by a crashed ingress lapses
  instead of holding the tenant's quota forever. A slot is added first and counted after, so
  two racing requests may both be refused at the limit, never both admitted past it (and the
  commands need no transaction, which a Redis Cluster would restrict).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

from promptcache.tiers.redis_store import RedisStore
from promptcache.tiers.store import StoreUnavailable

log = logging.getLogger("promptcache.scaleout")

SLOT_TTL_S = 600.0  # a request holding a slot longer than this is assumed gone
_SLOTS = b"promptcache:inflight:"


class SharedBlocks:
    def __init__(self, store: RedisStore, batch: int = 64):
        self.store = store
        self.batch = batch

    def leading(self, keys: Sequence[bytes], start: int = 0) -> int:
        """Leading blocks of `keys` held in Redis, counting from `start` (which the caller
        knows to be held somewhere already); 0 when Redis does not answer."""
        held = start
        try:
            while held < len(keys):
                batch = keys[held:held + self.batch]

                def run(client, batch=batch):
                    pipe = client.pipeline(transaction=False)
                    for key in batch:
                        pipe.exists(self.store.prefix + key)
                    return pipe.execute()

                found = self.store._call(run)
                for present in found:
                    if not present:
                        return held
                    held += 1
        except StoreUnavailable as exc:
            log.debug("shared tier not consulted for routing: %s", exc)
            return start
        return held


class ClusterTenantLimit:
    def __init__(self, store: RedisStore, limit: int, clock=time.time):
        self.store = store
        self.limit = limit
        self.clock = clock

    def _key(self, tenant: str) -> bytes:
        return _SLOTS + tenant.encode("utf-8")

    def acquire(self, tenant: str) -> str | None:
        """A slot id, or None when the tenant already holds `limit` slots. Redis down: the
        slot is granted (the per-process limit still applies), and the outage is logged."""
        slot, now, key = uuid.uuid4().hex, self.clock(), self._key(tenant)

        def run(client):
            pipe = client.pipeline(transaction=False)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {slot: now + SLOT_TTL_S})
            pipe.zcard(key)
            pipe.expire(key, int(SLOT_TTL_S) + 1)
            return pipe.execute()

        try:
            held = self.store._call(run)[2]
        except StoreUnavailable as exc:
            log.warning("cluster-wide tenant limit not checked: %s", exc)
            return slot
        if held > self.limit:
            self.release(tenant, slot)
            return None
        return slot

    def release(self, tenant: str, slot: str) -> None:
        try:
            self.store._call(lambda client: client.zrem(self._key(tenant), slot))
        except StoreUnavailable as exc:
            log.warning("tenant slot not released (it lapses in %d s): %s", int(SLOT_TTL_S), exc)

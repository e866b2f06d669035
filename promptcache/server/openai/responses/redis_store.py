"""Stored responses in the storage tiers' Redis, so that any replica serving the same Redis can
continue a chain by previous_response_id (the SQLite file is one machine's).

Keys are `promptcache:responses:` + the JSON [tenant, id] pair, so a lookup is always within
the caller's tenant; values are the record as JSON, expiring by Redis' own TTL. With a tier key
(`--tier-key`) they are sealed with AES-GCM like the KV blocks, bound to their key: stored
conversations are prompt text, and a shared Redis is readable by anyone holding its password.

The per-tenant quotas (store.py) are kept with an index per tenant under QUOTA_PREFIX: a sorted
set of its response ids by the time stored, and a hash of their sizes. A put takes the tenant's
lock (every replica over this Redis takes turns), forgets ids whose values Redis has expired,
evicts the tenant's oldest until the new response fits, and writes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from promptcache.server.core.records import ScanningRedis
from promptcache.server.openai.responses.store import DEFAULT_TTL_S, StoredResponse
from promptcache.tiers.codec import Cipher
from promptcache.tiers.redis_store import RedisStore

PREFIX = b"promptcache:responses:"
QUOTA_PREFIX = b"promptcache:responses-quota:"  # + index: or sizes: + the JSON [tenant]


class RedisResponseStore:
    def __init__(self, url: str, ttl_s: float = DEFAULT_TTL_S, tier_key: str | None = None,
                 timeout_s: float = 1.0, clock: Callable[[], float] = time.time, max_per_tenant: int | None = None,
                 max_bytes_per_tenant: int | None = None):
        if ttl_s <= 0:
            raise ValueError("the responses store's ttl_s must be positive")
        self.ttl_s, self.clock = ttl_s, clock
        self.max_per_tenant, self.max_bytes_per_tenant = max_per_tenant, max_bytes_per_tenant
        self._redis = RedisStore(url, prefix=PREFIX, timeout_s=timeout_s)
        self._quota = ScanningRedis(url, prefix=QUOTA_PREFIX, timeout_s=timeout_s)
        self._cipher = Cipher.from_hex(tier_key) if tier_key else None

    @property
    def _bounded(self) -> bool:
        return self.max_per_tenant is not None or self.max_bytes_per_tenant is not None

    @staticmethod
    def _index(tenant: str) -> tuple[bytes, bytes]:
        """The tenant's sorted set of ids and hash of sizes, full keys."""
        name = json.dumps([tenant]).encode()
        return QUOTA_PREFIX + b"index:" + name, QUOTA_PREFIX + b"sizes:" + name

    @staticmethod
    def _key(tenant: str, response_id: str) -> bytes:
        return json.dumps([tenant, response_id]).encode()

    def put(self, record: StoredResponse) -> None:
        key = self._key(record.tenant, record.id)
        value = json.dumps({"response": record.response, "input_items": record.input_items,
                            "history": record.history}).encode()
        if self._cipher is not None:
            value = self._cipher.seal(value, key)
        if not self._bounded:
            self._redis.put(key, value, self.ttl_s)
            return
        with self._quota.locked(json.dumps([record.tenant]).encode()):
            self._quota.run(lambda client: self._admit(client, record, key, value))

    def _admit(self, client, record: StoredResponse, key: bytes, value: bytes) -> None:
        """Under the tenant's lock: evict its oldest until `value` fits, then write it."""
        index, sizes = self._index(record.tenant)
        now, rid, nbytes = self.clock(), record.id.encode(), len(value)
        gone = [*client.zrangebyscore(index, "-inf", now - self.ttl_s), rid]  # expired by Redis, or replaced
        client.zrem(index, *gone)
        client.hdel(sizes, *gone)
        order = client.zrange(index, 0, -1)  # oldest first
        held = [int(size or 0) for size in client.hmget(sizes, order)] if order else []
        count, total = len(order), sum(held)
        max_count = self.max_per_tenant if self.max_per_tenant is not None else count + 1
        max_bytes = self.max_bytes_per_tenant if self.max_bytes_per_tenant is not None else total + nbytes
        evicted = []
        for other, size in zip(order, held):
            if count + 1 <= max_count and total + nbytes <= max_bytes:
                break
            evicted.append(other)
            count, total = count - 1, total - size
        ttl_ms = max(1, int(self.ttl_s * 1000))
        pipe = client.pipeline(transaction=False)
        for other in evicted:
            pipe.delete(PREFIX + self._key(record.tenant, other.decode()))
        if evicted:
            pipe.zrem(index, *evicted)
            pipe.hdel(sizes, *evicted)
        pipe.set(PREFIX + key, value, px=ttl_ms)
        pipe.zadd(index, {rid: now})
        pipe.hset(sizes, rid, nbytes)
        pipe.pexpire(index, ttl_ms)
        pipe.pexpire(sizes, ttl_ms)
        pipe.execute()

    def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        key = self._key(tenant, response_id)
        value = self._redis.get(key)
        if value is None:
            return None
        if self._cipher is not None:
            value = self._cipher.open(memoryview(value), key)
        data = json.loads(value)
        return StoredResponse(response_id, tenant, data["response"], data["input_items"], data["history"])

    def delete(self, tenant: str, response_id: str) -> bool:
        if self._bounded:
            index, sizes = self._index(tenant)
            self._quota.run(lambda client: (client.zrem(index, response_id), client.hdel(sizes, response_id)))
        return self._redis.delete(self._key(tenant, response_id))

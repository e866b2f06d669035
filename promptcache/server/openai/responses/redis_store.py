"""Stored responses in the storage tiers' Redis, so that any replica serving the same Redis can
continue a chain by previous_response_id (the SQLite file is one machine's).

Keys are `promptcache:responses:` + the JSON [tenant, id] pair, so a lookup is always within
the caller's tenant; values are the record as JSON, expiring by Redis' own TTL. With a tier key
(`--tier-key`) they are sealed with AES-GCM like the KV blocks, bound to their key: stored
conversations are prompt text, and a shared Redis is readable by anyone holding its password.
"""

from __future__ import annotations

import json

from promptcache.server.openai.responses.store import DEFAULT_TTL_S, StoredResponse
from promptcache.tiers.codec import Cipher
from promptcache.tiers.redis_store import RedisStore

PREFIX = b"promptcache:responses:"


class RedisResponseStore:
    def __init__(self, url: str, ttl_s: float = DEFAULT_TTL_S, tier_key: str | None = None,
                 timeout_s: float = 1.0):
        if ttl_s <= 0:
            raise ValueError("the responses store's ttl_s must be positive")
        self.ttl_s = ttl_s
        self._redis = RedisStore(url, prefix=PREFIX, timeout_s=timeout_s)
        self._cipher = Cipher.from_hex(tier_key) if tier_key else None

    @staticmethod
    def _key(tenant: str, response_id: str) -> bytes:
        return json.dumps([tenant, response_id]).encode()

    def put(self, record: StoredResponse) -> None:
        key = self._key(record.tenant, record.id)
        value = json.dumps({"response": record.response, "input_items": record.input_items,
                            "history": record.history}).encode()
        if self._cipher is not None:
            value = self._cipher.seal(value, key)
        self._redis.put(key, value, self.ttl_s)

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
        return self._redis.delete(self._key(tenant, response_id))

"""Blocks in Redis, or in a Redis Cluster, through redis-py.

URLs: `redis://[user:password@]host:port/db`, `rediss://...` (TLS), and `redis+cluster://` /
`rediss+cluster://` for a cluster (any node; redis-py's cluster client finds the rest and
routes each key to its shard, so the cache grows past one machine by adding shards).

Every operation has a timeout (default 100 ms, connect and read). Connection errors and
timeouts, and only those, are retried by redis-py's own Retry with exponential backoff; any
other error (a wrong password, a command refused) fails at once. Batches are pipelined: one
round trip for many blocks. Keys are `prefix + block key` (raw bytes), values expire after
their TTL (Redis' own expiry). The breaker around the store is the hierarchy's (`tier.py`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from promptcache.tiers.store import StoreUnavailable, check_ttl

SCHEMES = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")
DEFAULT_PREFIX = b"promptcache:kv:"


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


class RedisStore:
    name = "redis"

    def __init__(self, url: str, *, prefix: bytes = DEFAULT_PREFIX, timeout_s: float = 0.1, retries: int = 2,
                 max_connections: int = 16):
        if not url.startswith(SCHEMES):
            raise ValueError(f"a Redis URL starts with one of {', '.join(SCHEMES)}")
        self.url = redacted(url)
        self.prefix = prefix
        self.cluster = "+cluster://" in url
        options = dict(
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(ExponentialBackoff(cap=4 * timeout_s, base=timeout_s / 10), retries,
                        supported_errors=(RedisConnectionError, RedisTimeoutError)),
            max_connections=max_connections,
        )
        if self.cluster:
            self.name = "redis-cluster"
        self._url, self._options = url, options
        self._client_lock = threading.Lock()
        self._made: Redis | RedisCluster | None = None

    def _client(self) -> Redis | RedisCluster:
        """The client, made on first use: a cluster client asks for the slot map when made, and
        a cluster that is down then is an outage like any other, not a failed start."""
        with self._client_lock:
            if self._made is None:
                if self.cluster:
                    self._made = RedisCluster.from_url(self._url.replace("+cluster://", "://", 1), **self._options)
                else:
                    self._made = Redis.from_url(self._url, **self._options)
            return self._made

    def _call(self, fn, *args, **kwargs):
        """fn(client, *args): connection errors and timeouts (after redis-py's retries) and any
        other Redis error become StoreUnavailable, with the password left out."""
        try:
            return fn(self._client(), *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"{self.name} at {self.url}: {type(exc).__name__}") from None
        except (RedisError, RedisClusterException) as exc:
            raise StoreUnavailable(f"{self.name} at {self.url}: {type(exc).__name__}: {exc}") from None

    def _key(self, key: bytes) -> bytes:
        return self.prefix + key

    def get(self, key: bytes) -> bytes | None:
        return self._call(lambda client: client.get(self._key(key)))

    def put(self, key: bytes, value: bytes, ttl_s: float | None = None) -> None:
        self.put_many([(key, value)], ttl_s)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []

        def run(client):
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.get(self._key(key))
            return pipe.execute()

        return self._call(run)

    def put_many(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float | None = None) -> None:
        check_ttl(ttl_s)
        if not items:
            return
        px = None if ttl_s is None else max(1, math.ceil(ttl_s * 1000))

        def run(client):
            pipe = client.pipeline(transaction=False)
            for key, value in items:
                pipe.set(self._key(key), bytes(value), px=px)
            pipe.execute()

        self._call(run)

    def delete(self, key: bytes) -> bool:
        return bool(self._call(lambda client: client.delete(self._key(key))))

    def exists(self, key: bytes) -> bool:
        return bool(self._call(lambda client: client.exists(self._key(key))))

    def ttl(self, key: bytes) -> float | None:
        left = self._call(lambda client: client.pttl(self._key(key)))
        if left == -2:
            return None
        return math.inf if left == -1 else left / 1000

    def _keys(self) -> list[bytes]:
        pattern = self.prefix.replace(b"[", b"\\[").replace(b"*", b"\\*").replace(b"?", b"\\?") + b"*"
        return self._call(lambda client: list(client.scan_iter(match=pattern, count=1000)))

    def clear(self) -> int:
        keys = self._keys()
        for start in range(0, len(keys), 512):
            self._call(lambda client, batch: client.unlink(*batch), keys[start:start + 512])
        return len(keys)

    def size(self) -> int:
        return len(self._keys())

    def close(self) -> None:
        if self._made is not None:
            try:
                self._made.close()
            except RedisError:
                pass

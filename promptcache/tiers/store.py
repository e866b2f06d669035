"""The block store contract every tier keeps, and the in-memory reference store.

A store maps block keys (bytes) to encoded values (bytes, `codec.py`) with an optional TTL. It
never interprets a value: integrity, model and prefix checks belong to `decode`, one level up,
so every store is held to the same checks. The methods follow the seed proposal's cache store
protocol (get, set, delete, exists, ttl, clear, size) plus batched get and put, which the
remote store pipelines. `tests/tiers/test_store_contract.py` runs one suite against every store.

A store raises StoreUnavailable when it cannot answer (connection refused, timeout, disk
error); a missing or expired key is not an error but None.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol


class StoreUnavailable(RuntimeError):
    """The store could not answer in time; the caller treats it as a miss and tells the breaker."""


class BlockStore(Protocol):
    name: str

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes, ttl_s: float | None = None) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def exists(self, key: bytes) -> bool: ...
    def ttl(self, key: bytes) -> float | None:
        """Seconds left; math.inf for no expiry; None for a missing key."""
    def clear(self) -> int: ...
    def size(self) -> int:
        """Number of live entries."""
    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]: ...
    def put_many(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float | None = None) -> None: ...
    def close(self) -> None: ...


class Batched:
    """get_many and put_many as loops, for stores with no cheaper batch."""

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def put_many(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float | None = None) -> None:
        for key, value in items:
            self.put(key, value, ttl_s)

    def close(self) -> None:
        pass


def check_ttl(ttl_s: float | None) -> None:
    if ttl_s is not None and not ttl_s > 0:
        raise ValueError("ttl_s must be positive (None: no expiry)")


class MemoryStore(Batched):
    """Values in a dict, least recently used dropped past `max_bytes`. The contract's reference
    (and a tier for tests); the engine's own memory tier is the block pool."""

    name = "memory"

    def __init__(self, max_bytes: int | None = None, clock: Callable[[], float] = time.monotonic):
        self._data: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()

    def _live(self, key: bytes) -> tuple[bytes, float] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] <= self._clock():
            self._pop(key)
            return None
        return entry

    def _pop(self, key: bytes) -> bool:
        entry = self._data.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0])
        return entry is not None

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            entry = self._live(key)
            if entry is None:
                return None
            self._data.move_to_end(key)
            return entry[0]

    def put(self, key: bytes, value: bytes, ttl_s: float | None = None) -> None:
        check_ttl(ttl_s)
        with self._lock:
            self._pop(key)
            self._data[key] = (bytes(value), math.inf if ttl_s is None else self._clock() + ttl_s)
            self._bytes += len(value)
            while self._max_bytes is not None and self._bytes > self._max_bytes and self._data:
                self._pop(next(iter(self._data)))

    def delete(self, key: bytes) -> bool:
        with self._lock:
            return self._pop(key)

    def exists(self, key: bytes) -> bool:
        with self._lock:
            return self._live(key) is not None

    def ttl(self, key: bytes) -> float | None:
        with self._lock:
            entry = self._live(key)
            return None if entry is None else entry[1] - self._clock()

    def clear(self) -> int:
        with self._lock:
            count = len(self._data)
            self._data.clear()
            self._bytes = 0
            return count

    def size(self) -> int:
        with self._lock:
            now = self._clock()
            return sum(1 for _, expires in self._data.values() if expires > now)

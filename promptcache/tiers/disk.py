"""A directory of blocks: one file per block, a size cap, a TTL, atomic writes.

Layout: `<dir>/v1/<first 2 hex digits>/<key hex>.kv`; a file is an 8-byte little-endian float
(expiry, seconds since the epoch; 0 for none) followed by the encoded value. Writes go to a
temporary file in the same directory and are renamed into place, so a reader sees a whole old
file or a whole new one, never half; a crash leaves at most a stray temporary file, removed at
the next start. A file damaged anyway (a bad disk, a hand edit) fails its checksum in `decode`,
and the caller deletes it.

The size cap counts the files' bytes; past it, the least recently used files go (recency is
kept in memory, seeded from the files' modification times at start). The clock is wall time,
since expiry must survive a restart.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from promptcache.tiers.store import Batched, StoreUnavailable, check_ttl

logger = logging.getLogger(__name__)

_EXPIRY = struct.Struct("<d")
_SUFFIX = ".kv"
_TMP = ".tmp-"
# Past the cap, evict down to this share of it, so a full cache does not evict on every write.
_LOW_WATER = 0.9


class DiskStore(Batched):
    name = "disk"

    def __init__(self, directory: str | Path, max_bytes: int, clock: Callable[[], float] = time.time):
        if max_bytes < 1:
            raise ValueError("the disk cache size must be positive")
        self.root = Path(directory) / "v1"
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()  # guards the index only, never held during file I/O
        self._index: dict[str, tuple[int, float]] = {}  # key hex -> (file bytes, last use)
        self._bytes = 0
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._scan()
        except OSError as exc:
            raise StoreUnavailable(f"cannot use the disk cache directory: {exc.strerror}") from None

    def _scan(self) -> None:
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                if entry.name.startswith(_TMP):
                    Path(entry.path).unlink(missing_ok=True)
                elif entry.name.endswith(_SUFFIX):
                    stat = entry.stat()
                    self._index[entry.name[:-len(_SUFFIX)]] = (stat.st_size, stat.st_mtime)
                    self._bytes += stat.st_size

    def _path(self, name: str) -> Path:
        return self.root / name[:2] / (name + _SUFFIX)

    def get(self, key: bytes) -> bytes | None:
        name = key.hex()
        try:
            with open(self._path(name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"disk read failed: {exc.strerror}") from None
        if len(data) < _EXPIRY.size:
            return data  # too short to be ours: decode refuses it and the caller deletes it
        (expires,) = _EXPIRY.unpack_from(data)
        if expires and expires <= self._clock():
            self.delete(key)
            return None
        with self._lock:
            if name in self._index:
                self._index[name] = (self._index[name][0], self._clock())
        return data[_EXPIRY.size:]

    def put(self, key: bytes, value: bytes, ttl_s: float | None = None) -> None:
        check_ttl(ttl_s)
        name = key.hex()
        path = self._path(name)
        expires = 0.0 if ttl_s is None else self._clock() + ttl_s
        tmp = path.with_name(f"{_TMP}{name}-{os.getpid()}-{threading.get_ident()}")
        try:
            path.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(_EXPIRY.pack(expires))
                f.write(value)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreUnavailable(f"disk write failed: {exc.strerror}") from None
        size = _EXPIRY.size + len(value)
        with self._lock:
            old = self._index.get(name)
            self._bytes += size - (old[0] if old else 0)
            self._index[name] = (size, self._clock())
            victims = self._victims() if self._bytes > self.max_bytes else []
        for victim in victims:
            self._path(victim).unlink(missing_ok=True)

    def _victims(self) -> list[str]:
        """Least recently used names to drop until under the low-water mark (lock held)."""
        victims = []
        for name, (size, _) in sorted(self._index.items(), key=lambda item: item[1][1]):
            if self._bytes <= self.max_bytes * _LOW_WATER:
                break
            victims.append(name)
            self._bytes -= size
            del self._index[name]
        return victims

    def delete(self, key: bytes) -> bool:
        name = key.hex()
        with self._lock:
            old = self._index.pop(name, None)
            if old:
                self._bytes -= old[0]
        try:
            self._path(name).unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreUnavailable(f"disk delete failed: {exc.strerror}") from None

    def exists(self, key: bytes) -> bool:
        return self.ttl(key) is not None

    def ttl(self, key: bytes) -> float | None:
        try:
            with open(self._path(key.hex()), "rb") as f:
                head = f.read(_EXPIRY.size)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"disk read failed: {exc.strerror}") from None
        if len(head) < _EXPIRY.size:
            return None
        (expires,) = _EXPIRY.unpack(head)
        if not expires:
            return math.inf
        left = expires - self._clock()
        return left if left > 0 else None

    def clear(self) -> int:
        with self._lock:
            names, self._index, self._bytes = list(self._index), {}, 0
        for name in names:
            self._path(name).unlink(missing_ok=True)
        return len(names)

    def size(self) -> int:
        with self._lock:
            names = list(self._index)
        return sum(1 for name in names if self.ttl(bytes.fromhex(name)) is not None)

    @property
    def bytes_used(self) -> int:
        return self._bytes

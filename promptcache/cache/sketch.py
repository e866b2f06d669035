"""A count-min sketch over block keys: approximate "times seen" in fixed memory.

Estimates never undercount and overcount by at most ~e/width of all additions with probability
1 - e**-depth. Four row indexes come from one xxh3_128 of the key (32 bits each), so counts are
the same in every process. NOTE: counts never decay; a long-lived cache that needs aging should
build a fresh sketch periodically.
"""

from __future__ import annotations

from array import array

from xxhash import xxh3_128_intdigest

DEPTH = 4


class CountMinSketch:
    def __init__(self, width: int = 1 << 16) -> None:
        if width < 1:
            raise ValueError("width must be at least 1")
        self.width = width
        self._rows = [array("I", bytes(4 * width)) for _ in range(DEPTH)]

    def _cells(self, key: bytes) -> list[int]:
        digest = xxh3_128_intdigest(key)
        return [((digest >> (32 * row)) & 0xFFFFFFFF) % self.width for row in range(DEPTH)]

    def add(self, key: bytes) -> int:
        """Count one sighting of `key`; returns its estimate afterwards."""
        estimate = 0xFFFFFFFF
        for row, cell in zip(self._rows, self._cells(key)):
            count = row[cell]
            if count < 0xFFFFFFFF:
                count += 1
                row[cell] = count
            estimate = min(estimate, count)
        return estimate

    def estimate(self, key: bytes) -> int:
        return min(row[cell] for row, cell in zip(self._rows, self._cells(key)))

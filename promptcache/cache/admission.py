"""Admission: store a block only once its key has been offered `admit_after` times.

One-off prompts then never displace blocks that recur. Every insert counts each block it does
not already hold, so a prompt that repeats is admitted on its k-th insert.
"""

from __future__ import annotations

from promptcache.cache.sketch import CountMinSketch


class Admission:
    def __init__(self, admit_after: int, sketch: CountMinSketch | None = None) -> None:
        if admit_after < 1:
            raise ValueError("admit_after must be at least 1")
        self.admit_after = admit_after
        self._sketch = sketch if sketch is not None else CountMinSketch()

    def offer(self, key: bytes) -> bool:
        """Count a sighting of `key`; True if it has now been seen often enough to store."""
        if self.admit_after == 1:
            return True
        return self._sketch.add(key) >= self.admit_after

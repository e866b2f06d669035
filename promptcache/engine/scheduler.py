"""Which waiting sequence gets the next free slot.

Cache-aware, as SGLang's longest-prefix-first policy: among waiting sequences, prefer the one
with the most prompt tokens already in the prefix cache (its prefill is cheapest, and running it
now keeps its blocks warm). To avoid starving a request whose prompt shares nothing, a sequence
that has waited `starvation_rounds` admissions is taken first, oldest first.
"""

from __future__ import annotations

from collections.abc import Callable

from promptcache.engine.sequence import Sequence


class Scheduler:
    def __init__(self, cached_tokens: Callable[[Sequence], int], *, starvation_rounds: int = 8, window: int = 64):
        self._cached_tokens = cached_tokens
        self.starvation_rounds = starvation_rounds
        self.window = window  # only the oldest `window` waiting sequences are scored
        self.waiting: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        self.waiting.remove(seq)

    def __len__(self) -> int:
        return len(self.waiting)

    def pop_next(self) -> Sequence | None:
        """Take the sequence to admit now; every other waiting sequence ages by one round."""
        if not self.waiting:
            return None
        oldest = self.waiting[0]
        if oldest.waited_steps >= self.starvation_rounds or len(self.waiting) == 1:
            chosen = oldest
        else:
            candidates = self.waiting[: self.window]
            # max() keeps the first (oldest) of equal scores: FCFS among ties.
            chosen = max(candidates, key=self._cached_tokens)
        self.waiting.remove(chosen)
        for seq in self.waiting:
            seq.waited_steps += 1
        return chosen

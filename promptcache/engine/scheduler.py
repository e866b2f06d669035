"""The scheduler: who holds a KV slot, who waits, and what the next step computes.

It owns the free slots and the three queues a sequence moves through (waiting -> prefilling ->
running), admission, and chunk sizing. `schedule()` returns a `StepPlan`: at most one prefill
chunk and the decode batch. The decode batch is fixed before the prefill runs, so a sequence
that gets its first token from this step's prefill decodes from the next step on, and every
running sequence advances by exactly one token per step.

Admission order is cache-aware, as SGLang's longest-prefix-first policy: among waiting sequences,
prefer the one with the most prompt tokens already in the prefix cache (its prefill is cheapest,
and running it now keeps its blocks warm). Tenants take turns: the candidates are the waiting
sequences of the tenant that was admitted least recently, so one tenant's backlog never holds
another tenant's request behind it. A sequence that has waited `starvation_rounds` admissions
goes first, oldest first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from promptcache.engine.sequence import Sequence, Status
from promptcache.model.attention import GRID
from promptcache.model.row_invariance import MIN_ROWS


@dataclass(frozen=True)
class PrefillChunk:
    seq: Sequence
    start: int
    end: int

    @property
    def last(self) -> bool:
        """The chunk ends the prompt: it yields logits, and so the first token."""
        return self.end == self.seq.num_prompt


@dataclass
class StepPlan:
    prefill: PrefillChunk | None = None
    decode: list[Sequence] = field(default_factory=list)

    @property
    def sequences(self) -> list[Sequence]:
        return ([self.prefill.seq] if self.prefill else []) + self.decode


class Scheduler:
    def __init__(self, num_slots: int, cached_tokens: Callable[[Sequence], int], *, prefill_chunk: int = 512,
                 max_prefill_chunk: int = 2048, starvation_rounds: int = 8, window: int = 64):
        self._cached_tokens = cached_tokens
        self.prefill_chunk = prefill_chunk  # tokens per step while other sequences decode
        self.max_prefill_chunk = max(max_prefill_chunk, prefill_chunk)  # when none does
        self.starvation_rounds = starvation_rounds
        self.window = window  # only the oldest `window` waiting sequences are scored
        self.num_slots = num_slots
        self.free_slots = list(range(num_slots - 1, -1, -1))  # pop() hands out slot 0 first
        self.waiting: list[Sequence] = []
        self.prefilling: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._admissions = 0
        self._last_admitted: dict[str, int] = {}  # tenant -> admission count when last admitted

    # -- queues --------------------------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out of whichever queue holds it (its slot stays with it)."""
        if seq.status is Status.WAITING:
            self.waiting.remove(seq)
        elif seq.status is Status.PREFILL:
            self.prefilling.remove(seq)
        elif seq.status is Status.RUNNING:
            self.running.remove(seq)

    def free_slot(self, seq: Sequence) -> None:
        if seq.slot is not None:
            self.free_slots.append(seq.slot)
            seq.slot = None

    def num_waiting(self) -> int:
        return len(self.waiting)

    def num_active(self) -> int:
        return len(self.prefilling) + len(self.running)

    def prefill_done(self, seq: Sequence) -> None:
        self.prefilling.remove(seq)
        seq.status = Status.RUNNING
        self.running.append(seq)

    # -- one step ------------------------------------------------------------------------------

    def schedule(self, admit: Callable[[Sequence], None]) -> StepPlan:
        """Admit waiting sequences into free slots (`admit` copies a cached prefix in and may
        raise, which leaves the sequence out of every queue), then plan this step."""
        plan = StepPlan(decode=list(self.running))
        while self.free_slots and self.waiting:
            seq = self.pop_next()
            seq.slot = self.free_slots.pop()
            seq.status = Status.PREFILL
            admit(seq)
            seq.num_computed = seq.num_cached - seq.rewind
            self.prefilling.append(seq)
        if self.prefilling:
            seq = self.prefilling[0]
            plan.prefill = PrefillChunk(seq, seq.num_computed, seq.num_computed + self.chunk_size(seq))
        return plan

    def chunk_size(self, seq: Sequence) -> int:
        """Tokens to prefill now: small chunks while other streams wait on this step, large ones
        when nothing does. A chunk ends on an attention grid line when it can (so no grid block
        is computed twice), and never leaves a tail shorter than MIN_ROWS."""
        size = self.prefill_chunk if self.running else self.max_prefill_chunk
        start, total = seq.num_computed, seq.num_prompt
        end = start + size
        if end - end % GRID - start >= MIN_ROWS:
            end -= end % GRID
        if total - end < MIN_ROWS:
            end = total
        return end - start

    def pop_next(self) -> Sequence | None:
        """Take the sequence to admit now; every other waiting sequence ages by one round."""
        if not self.waiting:
            return None
        oldest = self.waiting[0]
        if oldest.waited_steps >= self.starvation_rounds or len(self.waiting) == 1:
            chosen = oldest
        else:
            candidates = self.waiting[: self.window]
            turn = min(candidates, key=lambda s: self._last_admitted.get(s.tenant, -1)).tenant
            # max() keeps the first (oldest) of equal scores: FCFS among ties.
            chosen = max((s for s in candidates if s.tenant == turn), key=self._cached_tokens)
        self.waiting.remove(chosen)
        self._admissions += 1
        self._last_admitted[chosen.tenant] = self._admissions
        for seq in self.waiting:
            seq.waited_steps += 1
        return chosen

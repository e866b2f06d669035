"""The scheduler: who holds a KV slot, who waits, and what the next step computes.

It owns the free slots and the three queues a sequence moves through (waiting -> prefilling ->
running), admission, and chunk sizing. `schedule()` returns a `StepPlan`: at most one prefill
chunk and the decode batch. The decode batch is fixed before the prefill runs, so a sequence
that gets its first token from this step's prefill decodes from the next step on, and every
running sequence advances by exactly one token per step.

Slots are shared between tenants (slot_shares.py): a free slot goes to the waiting tenant holding
the fewest slots (then the one admitted least recently), so one tenant's backlog never holds
another tenant's request behind it; and when no slot is free while a tenant below its share
waits, the longest-running generation of a tenant holding two slots more is paused (its KV
parked by the engine) and resumes later, in any free slot, before its tenant's new requests.

Within a tenant's turn, admission order is cache-aware, as SGLang's longest-prefix-first policy:
prefer the sequence with the most prompt tokens already in the prefix cache (its prefill is
cheapest, and running it now keeps its blocks warm). A sequence that has waited
`starvation_rounds` admissions of its own tenant goes first, oldest first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from promptcache.engine.sequence import Sequence, Status
from promptcache.engine.slot_shares import next_tenant, preemption_victim, slots_held
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
                 max_prefill_chunk: int = 2048, starvation_rounds: int = 8, window: int = 64,
                 preempt: bool = True, max_paused: int | None = None):
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
        self.paused: list[Sequence] = []  # preempted, their KV parked; they go first in their turn
        self.preempt = preempt
        # Parked KV is memory beside the slots: at most one slot region's worth of sequences.
        self.max_paused = num_slots if max_paused is None else max_paused
        self.preemptions = 0
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
        elif seq.status is Status.PAUSED:
            self.paused.remove(seq)
            seq.parked = None

    def free_slot(self, seq: Sequence) -> None:
        if seq.slot is not None:
            self.free_slots.append(seq.slot)
            seq.slot = None

    def num_waiting(self) -> int:
        return len(self.waiting)

    def num_active(self) -> int:
        """Admitted sequences: prefilling, running, or paused for another tenant."""
        return len(self.prefilling) + len(self.running) + len(self.paused)

    def prefill_done(self, seq: Sequence) -> None:
        self.prefilling.remove(seq)
        seq.status = Status.RUNNING
        self.running.append(seq)

    # -- one step ------------------------------------------------------------------------------

    def schedule(self, admit: Callable[[Sequence], None], park: Callable[[Sequence], bool] | None = None,
                 resume: Callable[[Sequence], None] | None = None) -> StepPlan:
        """Fill the free slots, then plan this step. `admit` copies a waiting sequence's cached
        prefix into its new slot (and may raise, which leaves the sequence out of every queue).
        With no slot free, a tenant below its share may take one by preemption: `park` copies
        the victim's KV out (False: it could not, and nothing is paused), and `resume` copies
        it back into the free slot the paused sequence is given; it decodes in this step."""
        while self.waiting or self.paused:
            if not self.free_slots and not self._preempt(park):
                break
            seq = self.pop_next()
            seq.slot = self.free_slots.pop()
            if seq.status is Status.PAUSED:
                seq.status = Status.RUNNING
                self.running.append(seq)
                resume(seq)
                continue
            seq.status = Status.PREFILL
            admit(seq)
            seq.num_computed = seq.num_cached - seq.rewind
            self.prefilling.append(seq)
        plan = StepPlan(decode=list(self.running))
        if self.prefilling:
            seq = self.prefilling[0]
            plan.prefill = PrefillChunk(seq, seq.num_computed, seq.num_computed + self.chunk_size(seq))
        return plan

    def _preempt(self, park: Callable[[Sequence], bool] | None) -> bool:
        """Pause one running sequence for a tenant below its share (slot_shares.py); True if a
        slot was freed."""
        if park is None or not self.preempt or len(self.paused) >= self.max_paused:
            return False
        victim = preemption_victim(self._candidates(), self.running, self.held(), self.num_slots)
        if victim is None or not park(victim):
            return False
        self.running.remove(victim)
        self.free_slot(victim)
        victim.status = Status.PAUSED
        victim.waited_steps = 0
        self.paused.append(victim)
        self.preemptions += 1
        return True

    def held(self) -> dict[str, int]:
        """Tenant -> slots held by its prefilling and running sequences."""
        return slots_held([*self.prefilling, *self.running])

    def _candidates(self) -> list[Sequence]:
        """The sequences admission chooses among: every paused one, then the oldest `window`
        waiting ones."""
        return self.paused + self.waiting[: self.window]

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
        """Take the sequence to admit or resume now: the tenant whose turn it is, and within it a
        paused sequence, else the oldest if it has waited `starvation_rounds`, else the longest
        cached prefix. The tenant's other waiting sequences age by one round."""
        candidates = self._candidates()
        if not candidates:
            return None
        turn = next_tenant(candidates, self.held(), self._last_admitted)
        own = [s for s in candidates if s.tenant == turn]  # paused ones first, then oldest first
        first = own[0]
        if first.status is Status.PAUSED or first.waited_steps >= self.starvation_rounds or len(own) == 1:
            chosen = first
        else:
            # max() keeps the first (oldest) of equal scores: FCFS among ties.
            chosen = max(own, key=self._cached_tokens)
        (self.paused if chosen.status is Status.PAUSED else self.waiting).remove(chosen)
        self._admissions += 1
        self._last_admitted[turn] = self._admissions
        for seq in self.waiting:
            if seq.tenant == turn:
                seq.waited_steps += 1
        return chosen

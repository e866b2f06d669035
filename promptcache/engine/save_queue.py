"""Saves to the prefix cache that wait for the next step.

A prompt's blocks are saved at the start of the step after its prefill, and a finished
sequence's at the start of the step after it finished, so saving never delays the output that
was waiting on that KV. Until its save has run, a sequence keeps its KV slot (`then_free_slot`
says the save is the last thing the slot is needed for).
"""

from __future__ import annotations

from dataclasses import dataclass

from promptcache.cache.keys import PromptKeys
from promptcache.engine.sequence import Sequence


@dataclass
class PendingSave:
    seq: Sequence
    tokens: list[int] | PromptKeys  # whose KV is in seq's slot; their full blocks are inserted
    roles: list[str]  # one per full block, for role-tiered eviction
    then_free_slot: bool = False
    side: object | None = None  # the prompt's logprob records, kept with its blocks (logprobs_store.py)


class SaveQueue:
    def __init__(self) -> None:
        self._pending: list[PendingSave] = []

    def add(self, save: PendingSave) -> None:
        self._pending.append(save)

    def take(self, seq: Sequence) -> PendingSave | None:
        """Remove and return the save queued for seq, if any."""
        for i, save in enumerate(self._pending):
            if save.seq is seq:
                return self._pending.pop(i)
        return None

    def find(self, seq: Sequence) -> PendingSave | None:
        """The save queued for seq, if any, left in the queue."""
        return next((save for save in self._pending if save.seq is seq), None)

    def drain(self) -> list[PendingSave]:
        pending, self._pending = self._pending, []
        return pending

    def __len__(self) -> int:
        return len(self._pending)

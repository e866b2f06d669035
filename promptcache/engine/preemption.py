"""Pausing a generation for another tenant, and resuming it where it stopped.

A part of `Engine` (a mixin). The scheduler decides whom to pause (slot_shares.py); this moves
the KV. A paused sequence's KV is copied out of its slot into a tensor of its own in host memory
(`Sequence.parked`), and copied back, bit for bit, into whichever slot it resumes in. Nothing is
recomputed, so it goes on producing exactly the tokens it would have: decode attention reads a
sequence's own keys wherever its slot is, and with `--deterministic` a row's bits do not depend on
the batch. The prefix cache is not used for this: it keeps only full blocks, may evict them, and
holds a reply's rows only within tolerance of a prefill's (docs/design.md), so a resume from it
could change the output.

The parked copy holds the positions whose KV exists: the prompt and every generated token but
the last (fed at the next decode step). Its cost is one copy out and one back, of
`KV bytes per token x length`; at most `Scheduler.max_paused` sequences are parked at once.
"""

from __future__ import annotations

import logging

import torch

from promptcache.engine.api import RequestOutput
from promptcache.engine.sequence import Sequence

logger = logging.getLogger(__name__)


class Preemption:
    # Set by Engine.__init__; read here. `_fail`: Outcomes.
    kv: torch.Tensor

    def _park(self, seq: Sequence) -> bool:
        """Copy seq's KV out of its slot; False (nothing changed) if the copy fails."""
        try:
            seq.parked = self.kv[:, :, seq.slot, :, :seq.length - 1].to("cpu", copy=True)
        except Exception:  # noqa: BLE001 - out of memory: seq keeps its slot, nobody is paused
            logger.exception("parking the KV of request %s failed; not preempting it", seq.request_id)
            seq.parked = None
            return False
        return True

    def _resume(self, seq: Sequence, outputs: list[RequestOutput]) -> None:
        """Copy seq's parked KV into its new slot; if that fails, seq alone fails."""
        try:
            parked, seq.parked = seq.parked, None
            self.kv[:, :, seq.slot, :, :parked.shape[3]] = parked.to(self.kv.device)
        except Exception:  # noqa: BLE001 - this request's fault alone
            logger.exception("resuming request %s failed", seq.request_id)
            self._fail(seq, "the engine failed while resuming this request", outputs, save=False)

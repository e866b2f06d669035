"""Never slower than recompute: whether a lower-tier fetch is worth making, and its deadline.

Computing n blocks of a prefix takes n * block_size / prefill_rate seconds, where the rate is
the engine's measured prefill speed (a moving average of tokens per second of whole prefills,
from admission to the end of prefill, so it includes the batching a real request sees).
Reading them from a tier is predicted as latency + n * block_s (`TierStats`). A fetch is
planned only when the prediction beats the recompute, and it is given a deadline of
`DEADLINE_SHARE` of the recompute time: past it, the fetch is abandoned, what was read is kept,
and the rest is computed. So a tier whose estimates were wrong costs a request at most that
share of its prefill once, and the estimates move so the next plan skips it.

Before the engine has measured a prefill, every fetch is planned (with a deadline of
`FIRST_DEADLINE_S`): there is nothing to compare with yet.
"""

from __future__ import annotations

import threading

from promptcache.tiers.stats import TierStats

DEADLINE_SHARE = 0.5
FIRST_DEADLINE_S = 1.0
_ALPHA = 0.2


class Planner:
    def __init__(self, block_size: int):
        self.block_size = block_size
        self.prefill_tokens_per_s: float | None = None
        self._lock = threading.Lock()

    def observe_prefill(self, tokens: int, seconds: float) -> None:
        if tokens <= 0 or seconds <= 0:
            return
        rate = tokens / seconds
        with self._lock:
            old = self.prefill_tokens_per_s
            self.prefill_tokens_per_s = rate if old is None else old + _ALPHA * (rate - old)

    def recompute_s(self, blocks: int) -> float | None:
        rate = self.prefill_tokens_per_s
        return None if rate is None else blocks * self.block_size / rate

    def plan(self, stats: TierStats, blocks: int) -> float | None:
        """The time budget for fetching `blocks` from a tier with `stats`; None: don't fetch."""
        if blocks <= 0:
            return None
        recompute = self.recompute_s(blocks)
        if recompute is None:
            return FIRST_DEADLINE_S
        if stats.predict_s(blocks) >= recompute:
            return None
        return DEADLINE_SHARE * recompute

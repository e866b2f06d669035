"""A circuit breaker for a remote store: closed, open, half-open, on an injected clock.

Why not pybreaker: it reads the wall clock itself and holds its lock while the wrapped call
runs, so one slow call would queue every other caller behind it. Here the lock guards only the
counters: `allow()` decides, the caller makes the call unlocked, then reports `success(latency)`
or `failure()`.

It opens after `failures` consecutive failures, and also on slowness: when the p99 of the last
`window` latencies exceeds `slow_s` (a store that answers, but later than the request can
wait, is as bad as one that does not). After `recovery_s` it lets one probe call through
(half-open); the probe's success closes it, its failure opens it again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitBreaker:
    def __init__(self, *, failures: int = 5, slow_s: float = 0.1, window: int = 50, min_samples: int = 20,
                 recovery_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        if failures < 1 or window < 1 or not 1 <= min_samples <= window:
            raise ValueError("failures >= 1 and 1 <= min_samples <= window")
        self.failures, self.slow_s, self.recovery_s = failures, slow_s, recovery_s
        self.min_samples = min_samples
        self._latencies: deque[float] = deque(maxlen=window)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_out = False
        self.opened = 0  # times it has opened
        self.rejected = 0  # calls refused while open

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.recovery_s:
                return HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """Whether a call may go to the store now (in half-open, one probe at a time)."""
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.recovery_s:
                self._state, self._probe_out = HALF_OPEN, False
            if self._state == CLOSED:
                return True
            if self._state == HALF_OPEN and not self._probe_out:
                self._probe_out = True
                return True
            self.rejected += 1
            return False

    def success(self, latency_s: float) -> None:
        with self._lock:
            if self._state == HALF_OPEN:
                self._state, self._probe_out = CLOSED, False
                self._latencies.clear()  # judge the recovered store on its new latencies
            self._consecutive = 0
            self._latencies.append(latency_s)
            if self._state == CLOSED and self._p99_too_slow():
                self._open()

    def failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._state == HALF_OPEN or self._consecutive >= self.failures:
                self._open()

    def _p99_too_slow(self) -> bool:
        if len(self._latencies) < self.min_samples:
            return False
        ordered = sorted(self._latencies)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] > self.slow_s

    def _open(self) -> None:
        self._state, self._probe_out = OPEN, False
        self._opened_at = self._clock()
        self._consecutive = 0
        self._latencies.clear()
        self.opened += 1

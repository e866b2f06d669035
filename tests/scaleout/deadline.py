"""Waiting for a condition with a deadline: a scale-out test that would hang fails instead."""

from __future__ import annotations

import time


def wait_until(predicate, what: str, timeout_s: float, poke=lambda: None, every_s: float = 0.1) -> None:
    """Return once `predicate()` holds; call `poke()` between checks; TimeoutError past the deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        poke()
        time.sleep(every_s)

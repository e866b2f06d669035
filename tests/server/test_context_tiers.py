"""Pinned KV over a restart with the disk tier: a retained prefix is written to the tier with
the pin's long retention when it is pinned, and after a restart (memory emptied, the tier
rescanned) retaining it again reads its KV back from disk instead of computing it. The tiny
random-weight Llama stands in for the model: what is tested is where the blocks come from."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tiers"))
from tier_engines import Clock, tier_engine, with_tiers  # noqa: E402

from promptcache.engine.api import CacheOptions, Request, SamplingParams  # noqa: E402


def retain(engine, prompt: list[int], owner: str) -> int:
    """One prefix-retaining request through the engine; returns the tokens its cache supplied."""
    request = Request(f"retain-{owner}-{len(engine.saves)}", prompt, SamplingParams(max_tokens=1),
                      CacheOptions(pin_owner=owner))
    engine.reserve_retained(request)
    engine.add_request(request)
    cached = 0
    while engine.has_unfinished():
        for out in engine.step():
            cached = out.num_cached_tokens
    return cached


def test_a_pinned_prefix_comes_back_from_disk_after_a_restart(tiny_llama_dir, tmp_path):
    prompt = [(7 * i) % 500 + 3 for i in range(200)]
    engine = tier_engine(tiny_llama_dir, Clock(), disk_dir=str(tmp_path))
    assert retain(engine, prompt, "session-a") == 0
    assert engine.retained_blocks("session-a") == 200 // 16
    assert engine.close_tiers()  # the pin's blocks are on disk
    with_tiers(engine, Clock(), disk_dir=str(tmp_path))  # restarted: memory and pins gone
    assert engine.retained_blocks("session-a") == 0
    assert retain(engine, prompt, "session-a") >= 160  # read back from disk, not computed
    assert engine.retained_blocks("session-a") == 200 // 16
    engine.prefix.cache.check_invariants()

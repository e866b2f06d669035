"""Engines over the tiny random-weight Llama with disk/Redis tiers attached, for the tier tests."""

from __future__ import annotations

import os

from promptcache.cache.config import CacheConfig
from promptcache.engine.api import CacheOptions, SamplingParams
from promptcache.tiers.config import TierConfig, build_tiers
from promptcache.tiers.planner import Planner
from tests.engine.helpers import tiny_engine

GREEDY = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
CACHE = CacheConfig(max_bytes=16 * 2**20, default_tenant_share=1.0)


class Clock:
    """A clock that moves only when told: breakers and deadlines without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecomputeIsSlow(Planner):
    """A planner told that prefill is very slow, so every lower-tier read is planned. The real
    planner would weigh the tiny model's microsecond prefills against real tier latencies, which
    is the benchmark's business; these tests are about what a restored block is."""

    def observe_prefill(self, tokens: int, seconds: float) -> None:
        self.prefill_tokens_per_s = 1.0


def tier_engine(model_dir, clock: Clock | None = None, cache: CacheConfig = CACHE, **tier_options):
    return with_tiers(tiny_engine(model_dir, cache=cache), clock, **tier_options)


def with_tiers(engine, clock: Clock | None = None, **tier_options):
    """`engine` as if restarted over these tiers: its memory emptied, new stores (a disk store
    rescans its directory), fresh breakers and statistics. Loading a model per test would cost
    seconds each; a process restart loses exactly this state."""
    if engine.prefix.tiers is not None:
        engine.close_tiers()
    engine.flush_cache(include_pinned=True)
    tier_options.setdefault("redis_prefix", f"test:{os.urandom(6).hex()}:".encode())
    stack = build_tiers(TierConfig(**tier_options), engine.prefix.block_size, clock=clock or Clock())
    stack.planner = RecomputeIsSlow(engine.prefix.block_size)
    engine.attach_tiers(stack)
    return engine


def run(engine, prompt: list[int], **options):
    return engine.generate([prompt], GREEDY, CacheOptions(**options))[0]


def tier_stats(engine, name: str) -> dict:
    return engine.cache_stats()["tiers"][name]

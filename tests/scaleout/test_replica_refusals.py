"""A request the replica's engine refuses at submit comes back to the ingress as that refusal,
not as a failed replica: a session turn past its pin budget is the single server's 409, not a
503. The replica runs here without Ray (EngineReplica outside Ray Serve), on the tiny model."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from cluster_settings import settings_for

from promptcache.cache.errors import PinBudgetExceeded
from promptcache.engine.api import CacheOptions, Request, SamplingParams
from promptcache.scaleout.replica import EngineReplica, Refused
from promptcache.server.engine_loop import EngineFailure


def test_a_turn_past_its_pin_budget_is_refused_with_the_budget_not_failed(tiny_llama_dir):
    replica = EngineReplica(replace(settings_for(tiny_llama_dir), max_pinned_fraction=0.0))
    try:
        turn = Request("turn-1", list(range(1, 65)), SamplingParams(max_tokens=2),
                       cache=CacheOptions(pin_owner="session:s1"))

        async def items():
            return [item async for item in replica.generate(turn)]

        (only,) = asyncio.run(items())
        assert isinstance(only, Refused) and isinstance(only.error, PinBudgetExceeded)
        assert replica.loop.in_flight == 0  # nothing was queued, nothing to abort
        # The ingress hands it to the route inside an EngineFailure, which raises it (a 409).
        assert EngineFailure("failed", only.error).refusal is only.error
    finally:
        replica.loop.stop(timeout=2.0)

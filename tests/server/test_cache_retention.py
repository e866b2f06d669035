"""prompt_cache_retention really sets the time-to-live of what a request inserts: "24h" blocks
outlive the server's default TTL and expire after a day, on the cache's own (faked) clock."""

from __future__ import annotations

import httpx
import pytest
from live_server import start_server
from server_prompts import SYSTEM_PROMPT, chat

from promptcache.server.settings import ServerSettings

DEFAULT_TTL_S = 60.0


@pytest.fixture
def ttl_server(tiny_llama_dir, monkeypatch):
    server = start_server(ServerSettings(model=str(tiny_llama_dir), default_ttl_s=DEFAULT_TTL_S))
    now = [1000.0]
    # The engine builds its cache with the real monotonic clock; the test moves time itself.
    monkeypatch.setattr(server.engine.prefix.cache, "_clock", lambda: now[0])
    yield server, now
    server.stop()


def cached(server, system: str, retention: str | None) -> int:
    extra = {"prompt_cache_retention": retention} if retention else {}
    reply = server.client().chat.completions.create(
        model=server.model, messages=chat(system, "q"), max_tokens=1, **extra
    )
    return reply.usage.prompt_tokens_details.cached_tokens


def advance(server, now: list[float], seconds: float) -> None:
    """Move the cache's clock, after the saves the engine defers to its next step have run
    (reading the stats runs them), so every block's TTL counts from before the jump."""
    httpx.get(server.url + "/v1/cache/stats").raise_for_status()
    now[0] += seconds


def test_24h_retention_outlives_the_default_ttl_and_expires_after_a_day(ttl_server):
    server, now = ttl_server
    day, default = "Day-long. " + SYSTEM_PROMPT, "Default. " + SYSTEM_PROMPT
    assert cached(server, day, "24h") == 0
    assert cached(server, default, "in_memory") == 0
    advance(server, now, 2 * DEFAULT_TTL_S)
    assert cached(server, day, "24h") > 300  # within its day
    assert cached(server, default, None) == 0  # past the default TTL: expired
    advance(server, now, 2 * 86_400)
    assert cached(server, day, "24h") == 0  # past the day

"""A live server over a disk tier and Redis: restart on the same directory, per-tier figures on
/metrics and /v1/cache/stats, and the hit's tier in x-cache-tiers (official openai client, real
HTTP, real redis-server)."""

from __future__ import annotations

import httpx
from tier_engines import with_tiers

from promptcache.server.settings import ServerSettings
from tests.server.live_server import start_server

PROMPT = "The lighthouse keeper counted the ships that passed each night. " * 12


def ask(server):
    reply = server.client().completions.create(model=server.model, prompt=PROMPT, max_tokens=6, temperature=0)
    return reply.choices[0].text, reply.usage.prompt_tokens_details.cached_tokens


def test_a_restarted_server_reports_cached_tokens_from_disk_and_tier_figures(tmp_path, replicas, redis_server):
    options = dict(disk_dir=str(tmp_path / "kv"), redis_url=redis_server.url, redis_prefix=b"server-test:")
    first = start_server(ServerSettings(), with_tiers(replicas[0], **options))
    try:
        cold_text, cached = ask(first)
        assert cached == 0
    finally:
        first.stop()
        first.engine.close_tiers()  # what `promptcache serve` does after uvicorn returns

    second = start_server(ServerSettings(), with_tiers(replicas[1], **options))
    try:
        why = httpx.post(second.url + "/v1/cache/explain", json={"model": second.model, "prompt": PROMPT}).json()
        r = httpx.post(second.base_url + "/completions", timeout=120,
                       json={"model": second.model, "prompt": PROMPT, "max_tokens": 6, "temperature": 0})
        text, cached = r.json()["choices"][0]["text"], r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert cached > 0 and text == cold_text
        # The hit came from disk (memory was empty after the restart), and says so.
        assert r.headers["x-cache-tiers"] == f"memory=0;disk={cached};redis=0"
        # Before it, explain found the prompt's blocks on disk, none in memory.
        assert why["tiers"]["memory"] == 0 and why["tiers"]["disk"] >= cached
        assert why["cause"].startswith("in a lower tier")
        stats = httpx.get(second.url + "/v1/cache/stats").json()
        assert stats["tiers"]["disk"]["hits"] > 0 and stats["tiers"]["redis"]["breaker"] == "closed"
        assert stats["hit_tokens"]["by_tier"]["disk"] == cached
        metrics = httpx.get(second.url + "/metrics").text
        assert f'promptcache_cached_tokens_by_tier_total{{tier="disk"}} {float(cached)}' in metrics
        assert 'promptcache_tier_blocks_total{result="hit",tier="disk"}' in metrics
        assert 'promptcache_tier_breaker_state{tier="redis"} 0.0' in metrics
        assert "promptcache_tier_write_queue_blocks" in metrics
    finally:
        second.stop()
        second.engine.close_tiers()

"""Redis stopped in the middle of a run of requests, then brought back (a real redis-server)."""

from __future__ import annotations

from redis_servers import RedisServer, need_redis
from tier_engines import Clock, run, tier_stats, with_tiers


def prompt(n: int) -> list[int]:
    return [(i * 31 + n * 977) % 4000 + 7 for i in range(100)]


def test_requests_survive_an_outage_the_breaker_opens_and_closes_when_redis_returns(tmp_path, replicas):
    need_redis()
    server = RedisServer(tmp_path / "outage").start()
    clock = Clock()
    try:
        engine = with_tiers(replicas[0], clock, redis_url=server.url, breaker_failures=3, breaker_recovery_s=30)
        assert run(engine, prompt(0)).finish_reason == "length"
        engine.prefix.tiers.writer.flush()
        assert tier_stats(engine, "redis")["writes"] == 6

        server.stop()
        for n in range(1, 6):  # every request still succeeds, computed from memory or cold
            assert run(engine, prompt(n)).finish_reason == "length"
            engine.prefix.tiers.writer.flush()
        stats = tier_stats(engine, "redis")
        assert stats["breaker"] == "open" and stats["errors"] == 3 and stats["dropped_writes"] > 0
        rejected = engine.prefix.tiers.tiers[0].breaker.rejected
        assert run(engine, prompt(6)).finish_reason == "length"  # open: Redis is not even asked
        engine.prefix.tiers.writer.flush()
        assert tier_stats(engine, "redis")["errors"] == 3
        assert engine.prefix.tiers.tiers[0].breaker.rejected > rejected

        server.start()  # back, empty (no persistence), on the same port
        clock.now += 30  # the recovery timeout passes: the next call is the probe
        assert run(engine, prompt(7)).finish_reason == "length"
        engine.prefix.tiers.writer.flush()
        assert tier_stats(engine, "redis")["breaker"] == "closed"

        engine.flush_cache()  # memory forgets prompt 7: only Redis has it now
        again = run(engine, prompt(7))
        assert again.num_cached_tokens > 0 and tier_stats(engine, "redis")["hits"] > 0
        engine.close_tiers()
    finally:
        server.stop()

"""Restart, replicas and isolation through the disk and Redis tiers, with a real engine.

Every restored answer is compared with a cold computation (no cache at all): blocks read back
from a tier must keep the cache's bitwise guarantee."""

from __future__ import annotations

import pytest
from tier_engines import run, tier_stats, with_tiers

from tests.engine.helpers import tiny_engine

PROMPT = [(i * 7919) % 5000 + 10 for i in range(300)]  # 18 full blocks of 16


@pytest.fixture(scope="module")
def cold(tiny_llama_dir):
    return run(tiny_engine(tiny_llama_dir, cache=None), PROMPT)


def _options(kind, request, tmp_path):
    if kind == "disk":
        return dict(disk_dir=str(tmp_path / "kv"))
    return dict(redis_url=request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster").url,
                redis_prefix=f"restore:{request.node.name}:".encode())


@pytest.mark.parametrize("kind", ["disk", "redis", "redis-cluster"])
def test_a_restarted_engine_restores_from_the_tier_with_the_cold_answer(kind, request, tmp_path, replicas, cold):
    options = _options(kind, request, tmp_path)
    first = with_tiers(replicas[0], **options)
    assert run(first, PROMPT).num_cached_tokens == 0
    assert first.close_tiers()  # graceful shutdown drains the write-behind queue
    name = "disk" if kind == "disk" else kind
    assert tier_stats(first, name)["writes"] == len(PROMPT) // 16

    restarted = with_tiers(replicas[0], **options)
    again = run(restarted, PROMPT)
    assert again.num_cached_tokens == 288  # every full block: the 12 tokens after them are computed
    assert (again.text, again.token_ids) == (cold.text, cold.token_ids)
    stats = tier_stats(restarted, name)
    assert stats["hits"] == 18 and stats["corrupt"] == 0 and stats["breaker"] == "closed"
    restarted.close_tiers()


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_replica_b_finds_what_replica_a_served(kind, request, tmp_path, replicas, cold):
    options = _options(kind, request, tmp_path)
    a, b = with_tiers(replicas[0], **options), with_tiers(replicas[1], **options)
    run(a, PROMPT)
    assert a.prefix.tiers.writer.flush()
    served = run(b, PROMPT)
    assert served.num_cached_tokens > 0 and (served.text, served.token_ids) == (cold.text, cold.token_ids)
    a.close_tiers(), b.close_tiers()


@pytest.mark.parametrize("kind", ["disk", "redis"])
def test_another_tenant_or_salt_never_reads_a_block_through_a_tier(kind, request, tmp_path, replicas):
    options = _options(kind, request, tmp_path)
    writer = with_tiers(replicas[0], **options)
    run(writer, PROMPT, tenant="alice")
    writer.close_tiers()
    reader = with_tiers(replicas[1], **options)
    assert run(reader, PROMPT, tenant="bob").num_cached_tokens == 0
    assert run(reader, PROMPT, tenant="alice", salt="other").num_cached_tokens == 0
    assert tier_stats(reader, kind)["hits"] == 0
    assert run(reader, PROMPT, tenant="alice").num_cached_tokens > 0  # the owner still does
    reader.close_tiers()

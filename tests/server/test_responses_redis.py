"""Stored responses in the storage tiers' Redis: two servers (replicas) over one real
redis-server continue each other's chains, tenants stay apart, values are sealed with the tier
key, and Redis expires them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import openai
import pytest
from live_server import start_server
from server_prompts import KEYS, SYSTEM_PROMPT

sys.path.insert(0, str(Path(__file__).parent.parent / "tiers"))
from redis_servers import RedisServer, need_redis  # noqa: E402

from promptcache.server.settings import build_settings  # noqa: E402

TIER_KEY = "ab" * 32


@pytest.fixture(scope="module")
def replicas(tiny_llama_dir, tmp_path_factory):
    need_redis()
    tmp = tmp_path_factory.mktemp("responses-redis")
    redis = RedisServer(tmp / "redis").start()
    keys_file = tmp / "keys.json"
    keys_file.write_text(json.dumps(KEYS))
    servers = []
    for _ in range(2):
        settings = build_settings(dict(model=str(tiny_llama_dir), default_max_tokens=4, redis_url=redis.url,
                                       tier_key=TIER_KEY, responses_ttl_s=600), keys_file=keys_file)
        servers.append(start_server(settings))
    yield servers, redis
    for server in servers:
        server.stop()
    redis.stop()


def test_a_chain_started_on_one_replica_continues_on_the_other(replicas):
    (a, b), redis = replicas
    ask = lambda server, key="key-alice", **kw: server.client(api_key=key).responses.create(  # noqa: E731
        model=server.model, instructions=SYSTEM_PROMPT, max_output_tokens=4, temperature=0, **kw)
    first = ask(a, input="Replica turn one.")
    second = ask(b, input="Replica turn two.", previous_response_id=first.id)
    assert second.usage.input_tokens > first.usage.input_tokens  # b rebuilt a's conversation
    assert b.client(api_key="key-alice").responses.retrieve(first.id).output_text == first.output_text
    with pytest.raises(openai.NotFoundError):
        b.client(api_key="key-bob").responses.retrieve(first.id)
    raw = {k: redis.client().get(k) for k in redis.client().keys(b"promptcache:responses:*")}
    assert len(raw) == 2 and not any(b"Replica turn" in v for v in raw.values())  # sealed
    assert all(0 < redis.client().ttl(k) <= 600 for k in raw)
    a.client(api_key="key-alice").responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        b.client(api_key="key-alice").responses.retrieve(first.id)


def test_a_tenants_stored_responses_are_held_to_its_quotas_across_replicas(replicas):
    from promptcache.server.openai.responses.redis_store import RedisResponseStore
    from promptcache.server.openai.responses.store import StoredResponse

    _, redis = replicas
    now = [1000.0]
    one, two = (RedisResponseStore(redis.url, 600, TIER_KEY, clock=lambda: now[0], max_per_tenant=3,
                                   max_bytes_per_tenant=4000) for _ in range(2))

    def put(store, tenant: str, rid: str, chars: int) -> None:
        now[0] += 1
        store.put(StoredResponse(rid, tenant, {"text": "x" * chars}, [], []))

    put(one, "quota-bob", "b1", 100)
    for i in range(4):  # the count: the fourth evicts the first, whichever replica stores it
        put((one, two)[i % 2], "quota-alice", f"a{i}", 100)
    assert [two.get("quota-alice", f"a{i}") is not None for i in range(4)] == [False, True, True, True]
    put(two, "quota-alice", "big", 3700)  # the bytes (values of ~n + 90 sealed): a2 must go as well as a1
    assert [one.get("quota-alice", r) is not None for r in ("a1", "a2", "a3", "big")] == [False, False, True, True]
    assert one.delete("quota-alice", "big")
    put(one, "quota-alice", "a4", 100)  # a deleted response frees its place
    assert [one.get("quota-alice", r) is not None for r in ("a3", "a4")] == [True, True]
    assert two.get("quota-bob", "b1") is not None  # another tenant's are untouched

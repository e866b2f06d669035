"""POST /v1/cache/explain names the cause of a miss: a block evicted (when, by which policy,
from the engine's bounded per-tenant eviction record), the same tools sent in another order,
a cache flush. The record itself is checked against a simple reference: the newest entries per
tenant, bounded, never another tenant's."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from live_server import start_server
from server_prompts import ADMIN_KEY, SYSTEM_PROMPT

from promptcache.cache.eviction import EvictedBlock
from promptcache.cache.eviction_record import EvictionRecord
from promptcache.server.settings import ServerSettings

TOOLS = [{"type": "function", "function": {"name": name, "description": f"The {name} tool",
                                           "parameters": {"type": "object", "properties": {}}}}
         for name in ("alpha", "bravo", "charlie")]


@settings(max_examples=60, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 9), st.sampled_from(["policy", "ttl"])),
                       max_size=40))
def test_the_record_keeps_each_tenants_newest_evictions_within_its_bounds(events):
    now = [0.0]
    record = EvictionRecord("lru", per_tenant=4, clock=lambda: now[0])
    reference: dict[str, dict[int, tuple[float, str]]] = {"a": {}, "b": {}}
    for tenant, key, reason in events:
        now[0] += 1
        record(EvictedBlock(key, b"", None, tenant, reason))
        own = reference[tenant]
        own.pop(key, None)
        own[key] = (now[0], reason)
        while len(own) > 4:
            own.pop(next(iter(own)))
    for tenant, own in reference.items():
        for key in range(10):
            got = record.lookup(tenant, key)
            assert (got.at, got.reason) == own[key] if key in own else got is None
    assert len(record) <= 8


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    # A small cache (about 100 blocks of the tiny model): a few long prompts evict the first.
    live = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=1, cache_mb=1.0,
                                       admin_key=ADMIN_KEY))
    yield live
    live.stop()


def chat(server, messages, **body):
    r = httpx.post(server.base_url + "/chat/completions", timeout=60,
                   json={"model": server.model, "messages": messages, "max_tokens": 1, **body})
    assert r.status_code == 200, r.text
    return r.json()


def explain(server, messages, **body) -> dict:
    return httpx.post(server.url + "/v1/cache/explain", json={"model": server.model, "messages": messages,
                                                              **body}).json()


def test_an_evicted_prompt_is_explained_with_the_policy_and_when(server):
    first = [{"role": "system", "content": "First. " + SYSTEM_PROMPT}, {"role": "user", "content": "Hello?"}]
    chat(server, first)
    assert explain(server, first)["cached_tokens"] > 0
    for i in range(8):  # other prompts take the room
        chat(server, [{"role": "system", "content": f"Other {i}. " + SYSTEM_PROMPT}, {"role": "user", "content": "Hi"}])
    why = explain(server, first)
    assert why["cached_tokens"] == 0
    assert why["cause"].startswith("evicted") and "by the lru policy (memory pressure)" in why["cause"]


def test_a_flushed_prompt_is_explained_as_flushed(server):
    messages = [{"role": "system", "content": "Flushed. " + SYSTEM_PROMPT}, {"role": "user", "content": "Hello?"}]
    chat(server, messages)
    r = httpx.post(server.url + "/v1/cache/flush", json={}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200
    why = explain(server, messages)
    assert why["cached_tokens"] == 0 and "by a cache flush" in why["cause"]


def test_tools_sent_in_another_order_are_named(server):
    messages = [{"role": "system", "content": "Tools. " + SYSTEM_PROMPT[:200]}, {"role": "user", "content": "Go"}]
    chat(server, messages, tools=TOOLS)
    assert explain(server, messages, tools=TOOLS)["cause"] is None
    why = explain(server, messages, tools=[TOOLS[1], TOOLS[0], TOOLS[2]])
    assert why["cause"].startswith("tools reordered"), why
    assert 0 < why["cached_tokens"] < why["prompt_tokens"]

"""Tenants over HTTP: the tenant comes from the API key, partitions the cache (salt or not),
and a tenant's quota keeps its flood from evicting another tenant's cached system prompt."""

from __future__ import annotations

import httpx
import openai
import pytest
from server_prompts import ADMIN_KEY, SYSTEM_PROMPT, chat


def cached(server, key: str, user: str, salt: str | None = None, system: str = SYSTEM_PROMPT) -> int:
    extra = {"cache_salt": salt} if salt else None
    reply = server.client(key).chat.completions.create(
        model=server.model, messages=chat(system, user), max_tokens=2, temperature=0, extra_body=extra
    )
    return reply.usage.prompt_tokens_details.cached_tokens


def test_second_tenant_never_hits_the_first_tenants_entries(keyed_server):
    system = "Isolation test. " + SYSTEM_PROMPT
    assert cached(keyed_server, "key-alice", "q1", system=system) == 0
    assert cached(keyed_server, "key-alice", "q2", system=system) > 300
    assert cached(keyed_server, "key-bob", "q1", system=system) == 0
    assert cached(keyed_server, "key-bob", "q2", system=system) > 300


def test_salt_partitions_only_inside_the_callers_tenant(keyed_server):
    system = "Salt test. " + SYSTEM_PROMPT
    assert cached(keyed_server, "key-alice", "q1", salt="team-a", system=system) == 0
    assert cached(keyed_server, "key-alice", "q2", salt="team-a", system=system) > 300
    assert cached(keyed_server, "key-alice", "q3", salt="team-b", system=system) == 0
    # Bob sends alice's salt: still his own namespace.
    assert cached(keyed_server, "key-bob", "q1", salt="team-a", system=system) == 0


def test_quota_keeps_a_flood_from_evicting_another_tenants_prompt(keyed_server):
    system = "Quota test. " + SYSTEM_PROMPT
    cached(keyed_server, "key-alice", "warm", system=system)
    # ~20 distinct prompts of ~340 tokens = ~420 blocks, far over the 1.33 MiB budget (128 blocks of
    # the tiny model's KV and their prompt-logprob room).
    for i in range(20):
        cached(keyed_server, "key-flood", "go", system=f"Flood {i}. " + SYSTEM_PROMPT)
    assert cached(keyed_server, "key-alice", "again", system=system) > 300
    stats = httpx.get(keyed_server.url + "/v1/cache/stats", headers=auth(ADMIN_KEY)).json()
    assert stats["tenant_bytes"]["flood"] <= 0.33 * 2**20


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("key", [None, "wrong-key", ADMIN_KEY])
def test_inference_needs_a_tenant_key(keyed_server, key):
    headers = auth(key) if key else {}
    body = {"model": keyed_server.model, "messages": chat("a", "b"), "max_tokens": 1}
    r = httpx.post(keyed_server.base_url + "/chat/completions", json=body, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_openai_client_raises_authentication_error(keyed_server):
    with pytest.raises(openai.AuthenticationError):
        keyed_server.client("nope").models.list()


def test_stats_show_a_tenant_only_its_own_keys(keyed_server):
    for key, label in (("key-alice", "alice-label"), ("key-bob", "bob-label")):
        keyed_server.client(key).chat.completions.create(
            model=keyed_server.model, messages=chat("a", "b"), max_tokens=1, prompt_cache_key=label
        )
    mine = httpx.get(keyed_server.url + "/v1/cache/stats", headers=auth("key-alice")).json()
    assert set(mine["prompt_cache_keys"]) == {"alice"} and "alice-label" in mine["prompt_cache_keys"]["alice"]
    assert set(mine["tenant_bytes"]) == {"alice"} and "bob" not in str(mine)
    everything = httpx.get(keyed_server.url + "/v1/cache/stats", headers=auth(ADMIN_KEY)).json()
    assert {"alice", "bob"} <= set(everything["prompt_cache_keys"])
    assert "bob-label" in everything["prompt_cache_keys"]["bob"]


def test_flush_needs_the_admin_key(keyed_server):
    flush = httpx.post(keyed_server.url + "/v1/cache/flush", json={"tenant": "bob"}, headers=auth("key-bob"))
    assert flush.status_code == 401
    assert httpx.get(keyed_server.url + "/v1/cache/stats").status_code == 401
    unknown = httpx.post(keyed_server.url + "/v1/cache/flush", json={"tenant": "nobody"}, headers=auth(ADMIN_KEY))
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "tenant"


def test_pin_keeps_a_tenants_prefix_through_a_flush(keyed_server):
    system = "Pin test. " + SYSTEM_PROMPT
    messages = [{"role": "system", "content": system}]
    pin = httpx.post(keyed_server.url + "/v1/cache/pin", json={"messages": messages}, headers=auth("key-bob"))
    assert pin.status_code == 200 and pin.json()["pinned_blocks"] >= 20
    assert pin.json()["tenant"] == "bob"
    other = httpx.post(
        keyed_server.url + "/v1/cache/pin", json={"messages": messages, "tenant": "alice"}, headers=auth("key-bob")
    )
    assert other.status_code == 400 and other.json()["error"]["param"] == "tenant"
    flushed = httpx.post(keyed_server.url + "/v1/cache/flush", json={"tenant": "bob"}, headers=auth(ADMIN_KEY))
    assert flushed.status_code == 200
    assert cached(keyed_server, "key-bob", "after flush", system=system) > 300
    unpin = httpx.post(keyed_server.url + "/v1/cache/unpin", json={"messages": messages}, headers=auth("key-bob"))
    assert unpin.json()["unpinned_blocks"] == pin.json()["pinned_blocks"]

"""POST /v1/cache/explain against a live server (tiny model): how much of a body of any
dialect is cached now, where the prompt leaves the cache (message, character, text on both
sides), the cause when the server knows it, only the caller's own entries, and no model run."""

from __future__ import annotations

import httpx
from server_prompts import ADMIN_KEY, SYSTEM_PROMPT, chat

COUNTERS = ("lookups", "hits", "hit_tokens", "miss_tokens", "insertions")


def explain(server, body: dict, key: str | None = None, **params) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(server.url + "/v1/cache/explain", json={"model": server.model, **body}, params=params,
                   headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def send_chat(server, messages, key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(server.base_url + "/chat/completions", headers=headers, timeout=60,
                   json={"model": server.model, "messages": messages, "max_tokens": 1})
    assert r.status_code == 200, r.text


def test_explain_names_the_message_and_text_where_the_prompt_leaves_the_cache(tiny_server):
    system = "Explain edition. " + SYSTEM_PROMPT
    send_chat(tiny_server, chat(system, "What is rule 3?"))
    stats_before = tiny_server.engine.cache_stats()
    answer = explain(tiny_server, {"messages": chat(system, "Something else entirely, " * 4)})
    assert answer["dialect"] == "chat" and answer["cached_tokens"] >= 320
    assert answer["cached_tokens"] == answer["tiers"]["memory"] and answer["tiers"]["disk"] == 0
    div = answer["divergence"]
    assert answer["cached_tokens"] <= div["token"] < answer["cached_tokens"] + 16
    assert div["message"] == 1 and div["role"] == "user" and div["after"].startswith("Something")
    assert "Something" in div["before"] + div["after"]
    assert answer["cause"].startswith("the prompt differs here")
    # Explaining runs nothing: no lookup, hit or insertion was counted (a request counts them).
    after = tiny_server.engine.cache_stats()
    assert {k: after[k] for k in COUNTERS} == {k: stats_before[k] for k in COUNTERS}
    send_chat(tiny_server, chat(system, "What is rule 4?"))
    served = tiny_server.engine.cache_stats()
    assert served["lookups"] > after["lookups"] and served["hits"] > after["hits"]


def test_explain_takes_an_anthropic_body_and_sees_the_same_entries(tiny_server):
    system = "Anthropic explain edition. " + SYSTEM_PROMPT
    send_chat(tiny_server, chat(system, "Hello"))
    body = {"system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "A different question. " * 4}], "max_tokens": 4}
    answer = explain(tiny_server, body)
    assert answer["dialect"] == "messages" and answer["cached_tokens"] >= 320
    assert answer["divergence"]["message"] == 1


def test_a_timestamp_in_the_system_prompt_is_named(tiny_server):
    send_chat(tiny_server, chat(f"Current time: 10:31:07. {SYSTEM_PROMPT}", "Hi"))
    answer = explain(tiny_server, {"messages": chat(f"Current time: 10:31:08. {SYSTEM_PROMPT}", "Hi")})
    assert answer["divergence"]["role"] == "system" and answer["divergence"]["message"] == 0
    assert "timestamp" in answer["cause"]


def test_a_prompt_below_one_block_and_a_fully_cached_one(tiny_server):
    short = explain(tiny_server, {"prompt": "Hi"}, dialect="completions")
    assert short["cached_tokens"] == 0 and "below one block" in short["cause"]
    prompt = "Completions explain edition. " + SYSTEM_PROMPT
    httpx.post(tiny_server.base_url + "/completions", json={"model": tiny_server.model, "prompt": prompt,
                                                           "max_tokens": 1}, timeout=60)
    full = explain(tiny_server, {"prompt": prompt})
    assert full["dialect"] == "completions" and full["cached_tokens"] == full["prompt_tokens"] // 16 * 16
    assert full["would_read"] <= full["cached_tokens"]


def test_only_the_callers_entries_are_consulted(keyed_server):
    system = "Tenant explain edition. " + SYSTEM_PROMPT
    send_chat(keyed_server, chat(system, "Hello"), key="key-alice")
    mine = explain(keyed_server, {"messages": chat(system, "Hello")}, key="key-alice")
    theirs = explain(keyed_server, {"messages": chat(system, "Hello")}, key="key-bob")
    assert mine["cached_tokens"] >= 320
    assert theirs["cached_tokens"] == 0 and theirs["cause"].startswith("nothing of this prompt is cached")
    salted = explain(keyed_server, {"messages": chat(system, "Hello"), "cache_salt": "s"}, key="key-alice")
    assert salted["cached_tokens"] == 0 and salted["cause"].startswith("another salt")
    r = httpx.post(keyed_server.url + "/v1/cache/explain", json={"model": keyed_server.model, "prompt": "x"},
                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 401  # the admin key is nobody's tenant: no namespace to explain


def test_bad_bodies_are_400s_naming_the_field(tiny_server):
    r = httpx.post(tiny_server.url + "/v1/cache/explain", json={"model": tiny_server.model, "messages": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = httpx.post(tiny_server.url + "/v1/cache/explain", json=[1, 2])
    assert r.status_code == 400
    r = httpx.post(tiny_server.url + "/v1/cache/explain", json={"model": "other", "prompt": "x"})
    assert r.status_code == 404

"""Sessions (/v1/context) on the embedded SmolLM2 behind a live server, with the official openai
client for the turns (httpx for /v1/context itself, which the client has no method for).

The engine is the suite's shared one on the serving defaults (its tenants' pin budget is half
its 256 MiB cache); one server at a time, the wall clock injected into the server state so that TTLs pass without
sleeping. The "restart" serves the same engine from a new server over the same records file
after dropping every cached block and pin, which is what a restarted process has lost (loading
a second engine would double the module's cost)."""

from __future__ import annotations

import json
from dataclasses import replace

import anthropic
import httpx
import openai
import pytest
from live_server import start_server
from server_prompts import SYSTEM_PROMPT

from promptcache.server.context.sessions import owner_of
from promptcache.server.retention import leases
from promptcache.server.settings import build_settings

KEYS = {"key-alice": {"tenant": "alice"}, "key-bob": {"tenant": "bob"}}
DOC = "Contract handbook. " + SYSTEM_PROMPT


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, smollm2_engine):
    tmp = tmp_path_factory.mktemp("context")
    (tmp / "keys.json").write_text(json.dumps(KEYS))
    settings = build_settings(dict(default_max_tokens=8, admin_key="key-admin",
                                   records_db=str(tmp / "records.sqlite3")), keys_file=tmp / "keys.json")
    engine = smollm2_engine
    server = start_server(settings, engine)
    clock = Clock()
    server.server.config.app.state.promptcache.wall_clock = clock
    yield server, clock, settings, engine
    server.stop()
    engine.flush_cache(include_pinned=True)  # the next module's server starts with no pins


def create(server, key="key-alice", **body) -> httpx.Response:
    body = {"model": server.model, "messages": [{"role": "system", "content": DOC}], **body}
    return httpx.post(server.url + "/v1/context", json=body, headers=auth(key), timeout=60)


def test_a_session_grows_turn_after_turn(setup):
    server, clock, _, engine = setup
    r = create(server, headers=None, ttl=600)
    assert r.status_code == 200, r.text
    session = r.json()
    sid = session["session_id"]
    assert session["cached_tokens"] >= 300 and session["expires_at"] == int(clock.now + 600)
    client = server.client("key-alice")
    messages = [{"role": "system", "content": DOC}]
    cached = []
    for i, question in enumerate(["Which rule is first?", "And the second one?", "Summarize rule three."]):
        messages.append({"role": "user", "content": question})
        kwargs = {"extra_body": {"session_id": sid}} if i % 2 == 0 else {"extra_headers": {"x-session-id": sid}}
        raw = client.chat.completions.with_raw_response.create(model=server.model, messages=messages, max_tokens=8,
                                                               temperature=0, **kwargs)
        reply = raw.parse()
        assert raw.headers["x-session-id"] == sid
        cached.append(reply.usage.prompt_tokens_details.cached_tokens)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    assert session["cached_tokens"] - 16 <= cached[0] and cached[0] < cached[1] < cached[2], cached
    listed = httpx.get(server.url + "/v1/context", headers=auth("key-alice")).json()["data"]
    assert sid in [s["session_id"] for s in listed]
    got = httpx.get(server.url + f"/v1/context/{sid}", headers=auth("key-alice")).json()
    assert got["cached_tokens"] >= cached[2]  # the pin follows the latest turn's prompt


def test_responses_and_messages_turns_use_the_session(setup):
    server, *_ = setup
    sid = create(server).json()["session_id"]
    raw = server.client("key-alice").responses.with_raw_response.create(
        model=server.model, instructions=DOC, input="Which rule is first?", max_output_tokens=4,
        extra_body={"session_id": sid})
    assert raw.headers["x-session-id"] == sid and raw.parse().usage.input_tokens_details.cached_tokens >= 300
    claude = anthropic.Anthropic(base_url=server.url, api_key="key-alice", max_retries=0)
    reply = claude.messages.create(model=server.model, system=DOC, max_tokens=4,
                                   messages=[{"role": "user", "content": "Which rule is last?"}],
                                   extra_headers={"x-session-id": sid})
    assert reply.usage.cache_read_input_tokens >= 300


def test_another_tenants_session_is_not_found(setup):
    server, *_ = setup
    sid = create(server).json()["session_id"]
    assert httpx.get(server.url + f"/v1/context/{sid}", headers=auth("key-bob")).status_code == 404
    assert httpx.delete(server.url + f"/v1/context/{sid}", headers=auth("key-bob")).status_code == 404
    with pytest.raises(openai.NotFoundError) as err:
        server.client("key-bob").chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
            extra_body={"session_id": sid})
    assert err.value.body["code"] == "session_not_found"
    with pytest.raises(openai.BadRequestError) as refused:  # one conversation, not several choices
        server.client("key-alice").chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2, n=2,
            extra_headers={"x-session-id": sid})
    assert refused.value.body["param"] == "session_id"
    assert httpx.get(server.url + f"/v1/context/{sid}", headers=auth("key-alice")).status_code == 200


def test_ttl_expiry_and_delete_release_the_pin(setup):
    server, clock, _, engine = setup
    sid = create(server, ttl=60).json()["session_id"]
    owner = owner_of("alice", sid)
    assert engine.retained_blocks(owner) > 0
    patched = httpx.patch(server.url + f"/v1/context/{sid}", headers={**auth("key-alice"), "x-session-ttl": "120"})
    assert patched.json()["expires_at"] == int(clock.now + 120)
    clock.now += 100
    assert httpx.get(server.url + f"/v1/context/{sid}", headers=auth("key-alice")).status_code == 200
    clock.now += 30
    assert httpx.get(server.url + f"/v1/context/{sid}", headers=auth("key-alice")).status_code == 404
    assert engine.retained_blocks(owner) == 0  # expired: its blocks are ordinary cache entries again
    other = create(server).json()["session_id"]
    assert httpx.delete(server.url + f"/v1/context/{other}", headers=auth("key-alice")).json()["deleted"]
    assert engine.retained_blocks(owner_of("alice", other)) == 0
    assert httpx.get(server.url + f"/v1/context/{other}", headers=auth("key-alice")).status_code == 404
    bad = httpx.post(server.url + "/v1/context", headers={**auth("key-alice"), "x-session-ttl": "soon"},
                     json={"model": server.model, "prompt": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-session-ttl"


def test_a_session_past_the_budget_is_refused_and_evicts_nothing(setup):
    server, *_ = setup
    stats = lambda: httpx.get(server.url + "/v1/cache/stats", headers=auth("key-admin")).json()  # noqa: E731
    before = stats()
    words = " ".join(f"w{i}" for i in range(3000))  # ~6,000 tokens: past the 2,144-token pin budget
    r = httpx.post(server.url + "/v1/context", json={"model": server.model, "prompt": words},
                   headers=auth("key-bob"), timeout=60)
    assert r.status_code == 409 and r.json()["error"]["code"] == "pin_budget_exceeded"
    assert "tenant pin budget" in r.json()["error"]["message"]
    after = stats()
    assert after["evictions"] == before["evictions"] and after["pinned_bytes"] == before["pinned_bytes"]
    assert after["insertions"] == before["insertions"]  # refused before any KV was computed


def test_a_tenants_sessions_are_capped(setup, monkeypatch):
    server, *_ = setup
    state = server.server.config.app.state.promptcache
    monkeypatch.setattr(state, "settings", replace(state.settings, limits=replace(state.settings.limits,
                                                                                  max_records_per_tenant=1)))
    body = {"model": server.model, "prompt": "A short prefix.", "ttl": 60}
    first = httpx.post(server.url + "/v1/context", json=body, headers=auth("key-bob"), timeout=60)
    assert first.status_code == 200
    second = httpx.post(server.url + "/v1/context", json=body, headers=auth("key-bob"), timeout=60)
    assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_records"
    httpx.delete(server.url + f"/v1/context/{first.json()['session_id']}", headers=auth("key-bob"))


def test_sessions_and_pins_survive_a_restart(setup):  # last: it stops the module's server
    server, clock, settings, engine = setup
    sid = create(server, ttl=600).json()["session_id"]
    pin = {"messages": [{"role": "system", "content": "Pinned by the admin. " + SYSTEM_PROMPT}], "tenant": "bob"}
    assert httpx.post(server.url + "/v1/cache/pin", json=pin, headers=auth("key-admin")).json()["pinned_blocks"] > 0
    server.stop()
    engine.flush_cache(include_pinned=True)  # what a restarted process no longer has in memory
    assert engine.retained_blocks(owner_of("alice", sid)) == 0
    restarted = start_server(replace(settings, restore_retained=True), engine)
    try:
        # Re-pinned at start-up, in the background: the admin pin, and the session.
        assert leases(restarted.server.config.app.state.promptcache).restored.wait(timeout=120)
        assert engine.retained_blocks(owner_of("alice", sid)) > 0
        assert engine.cache_stats()["tenant_pinned_bytes"].get("bob", 0) > 0
        restarted.server.config.app.state.promptcache.wall_clock = clock
        got = httpx.get(restarted.url + f"/v1/context/{sid}", headers=auth("key-alice"), timeout=60)
        assert got.status_code == 200 and got.json()["cached_tokens"] >= 300
        reply = restarted.client("key-alice").chat.completions.create(
            model=restarted.model, messages=[{"role": "system", "content": DOC}, {"role": "user", "content": "ok?"}],
            max_tokens=2, extra_body={"session_id": sid})
        assert reply.usage.prompt_tokens_details.cached_tokens >= 300
    finally:
        restarted.stop()

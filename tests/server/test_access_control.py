"""Who may reach what: /metrics and admin endpoints with and without keys, tenant labels that
say nothing about keys, Host and Origin checks against DNS rebinding and cross-site pages,
JSON-only state changes, and --isolate-by user."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from live_server import start_server
from server_prompts import ADMIN_KEY, SYSTEM_PROMPT, chat

from promptcache.server.settings import ServerSettings, build_settings

PLAIN_KEY = "plain-key-for-label-test"
METRICS_KEY = "scraper-key"


def auth(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture(scope="module")
def plain_key_server(tiny_llama_dir):
    settings = build_settings(
        dict(model=str(tiny_llama_dir), default_max_tokens=2, admin_key=ADMIN_KEY, metrics_key=METRICS_KEY),
        api_keys=[PLAIN_KEY, "second-plain-key"],
    )
    server = start_server(settings)
    yield server
    server.stop()


@pytest.mark.parametrize("key, status", [(None, 401), (PLAIN_KEY, 401), ("wrong", 401),
                                         (ADMIN_KEY, 200), (METRICS_KEY, 200)])
def test_metrics_need_the_admin_or_metrics_key_when_keys_are_configured(plain_key_server, key, status):
    assert httpx.get(plain_key_server.url + "/metrics", headers=auth(key)).status_code == status


def test_metrics_key_opens_nothing_else(plain_key_server):
    assert httpx.get(plain_key_server.url + "/v1/cache/stats", headers=auth(METRICS_KEY)).status_code == 401
    r = httpx.post(plain_key_server.base_url + "/completions", headers=auth(METRICS_KEY),
                   json={"model": plain_key_server.model, "prompt": "hi", "max_tokens": 1})
    assert r.status_code == 401


def test_open_server_metrics_and_admin_need_no_key(tiny_server):
    assert httpx.get(tiny_server.url + "/metrics").status_code == 200
    assert httpx.get(tiny_server.url + "/v1/cache/stats").status_code == 200


def test_metrics_public_opts_out(tiny_llama_dir):
    settings = build_settings(dict(model=str(tiny_llama_dir), metrics_public=True), api_keys=["k"])
    server = start_server(settings)
    try:
        assert httpx.get(server.url + "/metrics").status_code == 200
        assert httpx.get(server.url + "/v1/models").status_code == 401
    finally:
        server.stop()


def test_plain_key_tenant_label_is_not_derived_from_the_key(plain_key_server):
    client = plain_key_server.client(PLAIN_KEY)
    client.chat.completions.create(model=plain_key_server.model, messages=chat(SYSTEM_PROMPT, "x"), max_tokens=1)
    text = httpx.get(plain_key_server.url + "/metrics", headers=auth(ADMIN_KEY)).text
    assert 'tenant="key-1"' in text
    digest = hashlib.sha256(PLAIN_KEY.encode()).hexdigest()
    assert digest[:8] not in text and PLAIN_KEY not in text
    stats = httpx.get(plain_key_server.url + "/v1/cache/stats", headers=auth(PLAIN_KEY)).json()
    assert stats["tenant"] == "key-1" and digest[:8] not in str(stats)


def test_admin_cannot_pin_for_an_invented_tenant(plain_key_server):
    r = httpx.post(plain_key_server.url + "/v1/cache/pin", headers=auth(ADMIN_KEY),
                   json={"prompt": "hello there", "tenant": "made-up"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tenant"


@pytest.mark.parametrize("host, status", [("evil.example", 403), ("evil.example:8000", 403),
                                          ("localhost", 200), ("127.0.0.1", 200), ("[::1]:1234", 200)])
def test_loopback_server_accepts_only_loopback_host_names(tiny_server, host, status):
    r = httpx.get(tiny_server.base_url + "/models", headers={"Host": host})
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["error"]["code"] == "host_not_allowed"


def test_foreign_origin_is_refused_and_same_origin_is_not(tiny_server):
    own = tiny_server.url
    body = {"model": tiny_server.model, "prompt": "hi", "max_tokens": 1}
    foreign = httpx.post(tiny_server.base_url + "/completions", json=body, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "origin_not_allowed"
    assert httpx.post(tiny_server.base_url + "/completions", json=body, headers={"Origin": own}).status_code == 200


def test_allowed_host_and_origin_are_accepted_with_cors_headers(tiny_llama_dir):
    settings = ServerSettings(model=str(tiny_llama_dir), allowed_hosts=("api.example",),
                              allowed_origins=("https://app.example",))
    server = start_server(settings)
    try:
        assert httpx.get(server.base_url + "/models", headers={"Host": "api.example"}).status_code == 200
        assert httpx.get(server.base_url + "/models", headers={"Host": "other.example"}).status_code == 403
        r = httpx.get(server.base_url + "/models", headers={"Origin": "https://app.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        preflight = httpx.options(server.base_url + "/chat/completions", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert preflight.status_code == 200
        assert httpx.get(server.base_url + "/models", headers={"Origin": "https://evil.example"}).status_code == 403
    finally:
        server.stop()


def blocks_held(server) -> int:
    return httpx.get(server.url + "/v1/cache/stats").json()["blocks_held"]


def test_state_changes_need_a_json_body(tiny_server):
    tiny_server.client().completions.create(model=tiny_server.model, prompt=SYSTEM_PROMPT, max_tokens=1)
    held = blocks_held(tiny_server)
    assert held > 0
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        r = httpx.post(tiny_server.url + "/v1/cache/flush", content=b"", headers=headers)
        assert r.status_code == 415, (headers, r.text)
        assert r.json()["error"]["code"] == "unsupported_media_type"
    assert blocks_held(tiny_server) == held  # nothing was flushed


@pytest.fixture(scope="module")
def isolating_server(tiny_llama_dir):
    server = start_server(ServerSettings(model=str(tiny_llama_dir), isolate_by="user", default_max_tokens=1))
    yield server
    server.stop()


def cached(server, user: str | None, system: str, field: str = "user", salt: str | None = None) -> int:
    extra = {field: user} if user is not None else {}
    if salt is not None:
        extra["cache_salt"] = salt
    reply = server.client().chat.completions.create(
        model=server.model, messages=chat(system, "q"), max_tokens=1, extra_body=extra
    )
    return reply.usage.prompt_tokens_details.cached_tokens


def test_isolate_by_user_partitions_the_cache_by_end_user(isolating_server):
    system = "Isolated. " + SYSTEM_PROMPT
    assert cached(isolating_server, "alice", system) == 0
    assert cached(isolating_server, "alice", system) > 300
    assert cached(isolating_server, "bob", system) == 0
    assert cached(isolating_server, "alice", system, field="safety_identifier") > 300
    assert cached(isolating_server, None, system) == 0  # no user: a namespace of its own
    # No salt can reach a user's namespace: the salt is always wrapped with the user.
    assert cached(isolating_server, None, system, salt='["alice", null]') == 0


def test_without_isolation_end_users_share_the_tenants_cache(tiny_server):
    system = "Shared. " + SYSTEM_PROMPT
    assert cached(tiny_server, "alice", system) == 0
    assert cached(tiny_server, "bob", system) > 300

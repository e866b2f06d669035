"""Pins over HTTP against the cache's pin budgets: a refused pin is a 409 with the figures, and
an admin flush can release pins with include_pinned."""

from __future__ import annotations

import inspect

import httpx
import pytest
from server_prompts import SYSTEM_PROMPT

from promptcache.cache.errors import PinBudgetExceeded

PIN = {"messages": [{"role": "system", "content": "Budget test. " + SYSTEM_PROMPT}]}


def test_pin_past_the_budget_is_409_with_the_figures(tiny_server, monkeypatch):
    def refuse(request):  # admission refuses before any KV is computed
        raise PinBudgetExceeded(request.cache.tenant, 4096, 1024, 2048, 8192, 65536)

    monkeypatch.setattr(tiny_server.engine, "reserve_retained", refuse)
    r = httpx.post(tiny_server.url + "/v1/cache/pin", json=PIN)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "pin_budget_exceeded"
    assert "tenant pin budget" in error["message"] and "\n" not in error["message"]
    figures = {k: error[k] for k in ("tenant", "requested_bytes", "tenant_pinned_bytes", "tenant_budget_bytes",
                                     "global_pinned_bytes", "global_budget_bytes")}
    assert figures == {"tenant": "default", "requested_bytes": 4096, "tenant_pinned_bytes": 1024,
                       "tenant_budget_bytes": 2048, "global_pinned_bytes": 8192, "global_budget_bytes": 65536}


def test_flush_passes_include_pinned_to_the_engine(tiny_server, monkeypatch):
    calls = []

    def flush_cache(tenant=None, include_pinned=False):
        calls.append((tenant, include_pinned))
        return 3

    monkeypatch.setattr(tiny_server.engine, "flush_cache", flush_cache)
    r = httpx.post(tiny_server.url + "/v1/cache/flush", json={"include_pinned": True})
    assert r.json() == {"flushed_blocks": 3, "tenant": None, "include_pinned": True}
    httpx.post(tiny_server.url + "/v1/cache/flush", json={"tenant": "default"})
    assert calls == [(None, True), ("default", False)]
    bad = httpx.post(tiny_server.url + "/v1/cache/flush", json={"include_pinned": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "include_pinned"


def cached(server, system: str) -> int:
    reply = server.client().chat.completions.create(
        model=server.model, messages=[{"role": "system", "content": system}, {"role": "user", "content": "q"}],
        max_tokens=1,
    )
    return reply.usage.prompt_tokens_details.cached_tokens


def test_flush_with_include_pinned_releases_pins(tiny_server):
    if "include_pinned" not in inspect.signature(tiny_server.engine.flush_cache).parameters:
        pytest.skip("the engine's flush_cache has no include_pinned yet")
    system = PIN["messages"][0]["content"]
    assert httpx.post(tiny_server.url + "/v1/cache/pin", json=PIN).json()["pinned_blocks"] > 0
    httpx.post(tiny_server.url + "/v1/cache/flush", json={})
    assert cached(tiny_server, system) > 300  # a plain flush keeps pinned blocks
    httpx.post(tiny_server.url + "/v1/cache/flush", json={"include_pinned": True})
    assert cached(tiny_server, system) == 0

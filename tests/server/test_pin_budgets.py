"""Pins over HTTP against the cache's real pin budgets, on a server whose budgets are small: a
pin past them is a 409 whose figures are the server's own budgets and pins (derived here from
its settings and the pins it made), and pins nothing; an admin flush releases pins only with
include_pinned."""

from __future__ import annotations

import httpx
import pytest
from live_server import start_server
from server_prompts import SYSTEM_PROMPT

from promptcache.server.settings import ServerSettings

CACHE_MB, TENANT_SHARE, GLOBAL_SHARE = 1.0, 0.1, 0.5
BIG = {"messages": [{"role": "system", "content": "Budget test. " + SYSTEM_PROMPT}]}
SMALL = {"messages": [{"role": "system", "content": "A short pin. " * 12}]}


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    server = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=1, cache_mb=CACHE_MB,
                                         default_tenant_share=1.0, pin_quota_fraction=TENANT_SHARE,
                                         max_pinned_fraction=GLOBAL_SHARE))
    yield server
    server.stop()


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + "/v1/cache/" + path, json=body, timeout=60)


def pinned_bytes(server) -> int:
    return server.engine.prefix.cache.pinned_bytes()


def test_pin_past_the_budget_is_409_with_the_servers_figures(server):
    post(server, "flush", {"include_pinned": True})
    nbytes = httpx.get(server.url + "/v1/cache/stats").json()["block_nbytes"]
    capacity = int(CACHE_MB * 2**20) // nbytes
    small = post(server, "pin", SMALL).json()
    assert small["pinned_blocks"] == small["prefix_tokens"] // 16 > 0
    big_tokens = post(server, "unpin", BIG).json()["prefix_tokens"]  # its length; nothing was pinned
    assert small["pinned_blocks"] + big_tokens // 16 > int(TENANT_SHARE * capacity)

    r = post(server, "pin", BIG)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "pin_budget_exceeded"
    assert "tenant pin budget" in error["message"] and "\n" not in error["message"]
    figures = {k: error[k] for k in ("tenant", "requested_bytes", "tenant_pinned_bytes", "tenant_budget_bytes",
                                     "global_pinned_bytes", "global_budget_bytes")}
    held = small["pinned_blocks"] * nbytes
    assert figures == {"tenant": "default", "requested_bytes": big_tokens // 16 * nbytes,
                       "tenant_pinned_bytes": held, "tenant_budget_bytes": int(TENANT_SHARE * capacity) * nbytes,
                       "global_pinned_bytes": held, "global_budget_bytes": int(GLOBAL_SHARE * capacity) * nbytes}
    assert pinned_bytes(server) == held  # the refused pin pinned nothing
    assert post(server, "pin", SMALL).json()["pinned_blocks"] == small["pinned_blocks"]  # and broke nothing


def cached(server, system: str) -> int:
    reply = server.client().chat.completions.create(
        model=server.model, messages=[{"role": "system", "content": system}, {"role": "user", "content": "q"}],
        max_tokens=1,
    )
    return reply.usage.prompt_tokens_details.cached_tokens


def test_flush_releases_pins_only_with_include_pinned(server):
    post(server, "flush", {"include_pinned": True})
    system = SMALL["messages"][0]["content"]
    blocks = post(server, "pin", SMALL).json()["pinned_blocks"]
    assert blocks > 0 and pinned_bytes(server) > 0
    plain = post(server, "flush", {}).json()
    assert plain["tenant"] is None and plain["include_pinned"] is False
    assert cached(server, system) == blocks * 16  # a plain flush keeps pinned blocks
    assert post(server, "flush", {"tenant": "default"}).json()["tenant"] == "default"
    assert cached(server, system) == blocks * 16
    everything = post(server, "flush", {"include_pinned": True}).json()
    assert everything["include_pinned"] is True and everything["flushed_blocks"] >= blocks
    assert pinned_bytes(server) == 0 and cached(server, system) == 0
    bad = post(server, "flush", {"include_pinned": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "include_pinned"

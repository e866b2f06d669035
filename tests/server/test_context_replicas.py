"""Two replicas over one real redis-server (`--redis-url`) see the same sessions and cached
contents: what one creates, the other finds, pins on its own engine at first use, and serves
from it; another tenant's id is not found on either. Two engines on the tiny random-weight
Llama stand in for the replicas' models: what is tested is the records and the pins."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from live_server import start_server
from server_prompts import SYSTEM_PROMPT

sys.path.insert(0, str(Path(__file__).parent.parent / "tiers"))
from redis_servers import RedisServer, need_redis  # noqa: E402

from promptcache.cache.config import CacheConfig  # noqa: E402
from promptcache.server.context.sessions import owner_of  # noqa: E402
from promptcache.server.settings import build_settings  # noqa: E402
from tests.engine.helpers import tiny_engine  # noqa: E402

KEYS = {"key-alice": {"tenant": "alice"}, "key-bob": {"tenant": "bob"}}


@pytest.fixture(scope="module")
def replicas(tiny_llama_dir, tmp_path_factory):
    need_redis()
    tmp = tmp_path_factory.mktemp("context-replicas")
    redis = RedisServer(tmp / "redis").start()
    (tmp / "keys.json").write_text(json.dumps(KEYS))
    settings = build_settings(dict(model=str(tiny_llama_dir), default_max_tokens=4, redis_url=redis.url),
                              keys_file=tmp / "keys.json")
    cache = CacheConfig(max_bytes=32 * 2**20, default_tenant_share=1.0)
    servers = [start_server(settings, tiny_engine(tiny_llama_dir, cache=cache)) for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()
    redis.stop()


def test_two_replicas_share_sessions_and_cached_contents(replicas):
    a, b = replicas
    alice = {"Authorization": "Bearer key-alice"}
    system = {"role": "system", "content": "Replica test. " + SYSTEM_PROMPT}
    created = httpx.post(a.url + "/v1/context", json={"model": a.model, "messages": [system], "ttl": 300},
                         headers=alice, timeout=60).json()
    sid = created["session_id"]
    assert b.engine.retained_blocks(owner_of("alice", sid)) == 0
    got = httpx.get(b.url + f"/v1/context/{sid}", headers=alice, timeout=60).json()
    assert got["cached_tokens"] == created["cached_tokens"] > 300  # pinned on B at first use
    reply = b.client("key-alice").chat.completions.create(
        model=b.model, messages=[system, {"role": "user", "content": "hi"}], max_tokens=2,
        extra_body={"session_id": sid})
    assert reply.usage.prompt_tokens_details.cached_tokens > 300
    assert httpx.get(b.url + f"/v1/context/{sid}", headers={"Authorization": "Bearer key-bob"}).status_code == 404
    gemini = {"model": f"models/{a.model}", "systemInstruction": {"parts": [{"text": system["content"]}]}}
    name = httpx.post(a.url + "/v1beta/cachedContents", json=gemini, headers={"x-goog-api-key": "key-alice"},
                      timeout=60).json()["name"]
    assert httpx.get(f"{b.url}/v1beta/{name}", headers={"x-goog-api-key": "key-alice"}, timeout=60).status_code == 200
    assert httpx.delete(b.url + f"/v1/context/{sid}", headers=alice).json()["deleted"]
    assert httpx.get(a.url + f"/v1/context/{sid}", headers=alice).status_code == 404
    assert a.engine.retained_blocks(owner_of("alice", sid)) == 0  # A let its pin go on learning of it

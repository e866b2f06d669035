"""The prompt registry in the storage tiers' Redis: two servers (replicas) over one real
redis-server see the same prompts and versions, a replica started later with --warm-prompts
serves the other's warm prompt as a hit from its first request (these test servers have no KV
tier under the memory cache, so the hit is its own start-up's re-warm), tenants stay apart,
and templates are sealed with the tier key."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
from live_server import start_server
from server_prompts import KEYS, SYSTEM_PROMPT

sys.path.insert(0, str(Path(__file__).parent.parent / "tiers"))
from redis_servers import RedisServer, need_redis  # noqa: E402

from promptcache.server.settings import build_settings  # noqa: E402

TIER_KEY = "cd" * 32


def test_two_replicas_share_one_registry(tiny_llama_dir, keyed_tiny_engine, tmp_path):
    need_redis()
    redis = RedisServer(tmp_path / "redis").start()
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(KEYS))

    def replica(engine=None, **overrides):
        settings = build_settings(dict(model=str(tiny_llama_dir), default_max_tokens=4, redis_url=redis.url,
                                       tier_key=TIER_KEY, **overrides), keys_file=keys_file)
        return start_server(settings, engine=engine)

    a = replica(keyed_tiny_engine)  # the suite's shared engine; b loads one of its own
    b = None
    try:
        on = lambda server, key="key-alice": httpx.Client(  # noqa: E731
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        warm = on(a).post("/v1/prompts", json={"template": SYSTEM_PROMPT + " Help {{who}}.", "warm": True}).json()
        pid = warm["id"]
        b = replica(warm_prompts=True)  # starts after the registration: re-warms it from Redis

        assert on(b).get(f"/v1/prompts/{pid}").json()["template"] == SYSTEM_PROMPT + " Help {{who}}."
        assert on(b).post(f"/v1/prompts/{pid}/versions", json={"template": "Short {{who}}."}).json()["version"] == "2"
        assert on(a).post(f"/v1/prompts/{pid}/versions", json={"template": "Third {{who}}."}).json()["version"] == "3"
        assert on(a).post(f"/v1/prompts/{pid}/default", json={"version": "3"}).status_code == 200
        assert on(b).get(f"/v1/prompts/{pid}").json()["template"] == "Third {{who}}."
        assert [v["version"] for v in on(b).get(f"/v1/prompts/{pid}/versions").json()["data"]] == ["1", "2", "3"]
        assert on(b, "key-bob").get(f"/v1/prompts/{pid}").status_code == 404

        first = b.client(api_key="key-alice").responses.create(
            model=b.model, input="Hi", max_output_tokens=4, temperature=0,
            prompt={"id": pid, "version": "1", "variables": {"who": "Ann"}})
        assert first.usage.input_tokens_details.cached_tokens >= warm["warm_tokens"] >= 320

        raw = redis.client().hgetall(next(iter(redis.client().keys(b"promptcache:prompts:{*"))))
        assert raw and not any(b"Rule 1" in value or b"Third" in value for value in raw.values())  # sealed

        assert on(b).delete(f"/v1/prompts/{pid}").status_code == 200
        assert on(a).get(f"/v1/prompts/{pid}").status_code == 404
        assert not redis.client().smembers(b"promptcache:prompts:warm")
    finally:
        for server in (a, b):
            if server is not None:
                server.stop()
        redis.stop()

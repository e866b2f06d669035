"""Per-tenant fairness at admission: one tenant may have at most `max_requests_per_tenant`
requests queued or running; past it that tenant gets 429 with Retry-After, the others do not.
Two tenant keys against the app on the real tiny engine, stepped through a script that holds
every request in flight (no uvicorn). The time it buys another tenant on the real model is in
benchmarks/fairness.py."""

from __future__ import annotations

import asyncio

import pytest
from test_engine_loop import Faulty, body, serve, wait_for

from promptcache.server.app import create_app, engine_from_settings
from promptcache.server.settings import ServerSettings, build_settings
from promptcache.server.tenants import Tenant

KEYS = {"key-alice": Tenant("alice"), "key-bob": Tenant("bob")}


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    engine = engine_from_settings(ServerSettings(model=str(tiny_llama_dir)))
    yield engine
    while engine.has_unfinished():
        engine.step()


def test_the_tenant_past_its_limit_gets_429_with_retry_after_and_the_other_does_not(engine):
    async def test(client, state):
        engine = state.engine

        async def hold(key):  # a request the engine takes in and keeps running
            task = asyncio.create_task(client.post("/v1/completions", json=body(engine, 3), headers=auth(key)))
            await wait_for(engine.froze)
            return task

        alice = [await hold("key-alice"), await hold("key-alice")]
        refused = await client.post("/v1/completions", json=body(engine, 3), headers=auth("key-alice"))
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_exceeded", "rate_limit_exceeded")
        assert "2 requests" in error["message"] and "bob" not in error["message"]
        bob = [await hold("key-bob")]
        assert (state.loop.in_flight_of("alice"), state.loop.in_flight_of("bob")) == (2, 1)
        # bob's second request is in too; the script is spent, so the engine runs everything to the end
        bob.append(asyncio.create_task(client.post("/v1/completions", json=body(engine, 3), headers=auth("key-bob"))))
        texts = []
        for task in alice + bob:
            response = await task
            assert response.status_code == 200, response.text
            texts.append(response.json()["choices"][0]["text"])
        # with its requests done, alice is admitted again, and every reply is the same greedy one
        again = await client.post("/v1/completions", json=body(engine, 3), headers=auth("key-alice"))
        assert again.status_code == 200
        assert texts == [again.json()["choices"][0]["text"]] * 4
        assert state.loop.in_flight == 0

    serve(Faulty(engine, ["freeze"] * 3), test, api_keys=KEYS, max_requests_per_tenant=2)


def test_a_streaming_request_past_the_limit_is_refused_before_the_stream_starts(engine):
    async def test(client, state):
        first = asyncio.create_task(client.post("/v1/completions", json=body(engine, 3, stream=True),
                                                headers=auth("key-alice")))
        await wait_for(state.engine.froze)
        refused = await client.post("/v1/completions", json=body(engine, 3, stream=True), headers=auth("key-alice"))
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        other = await client.post("/v1/completions", json=body(engine, 3, stream=True), headers=auth("key-bob"))
        assert other.status_code == 200 and other.text.rstrip().endswith("data: [DONE]")
        assert (await first).status_code == 200

    serve(Faulty(engine, ["freeze"]), test, api_keys=KEYS, max_requests_per_tenant=1)


# settings -> the limit the loop enforces
LIMIT_CASES = {
    "keys, defaults": (dict(api_keys=KEYS), 16),
    "keys, small queue": (dict(api_keys=KEYS, max_queue=4), 2),
    "keys, large queue": (dict(api_keys=KEYS, max_queue=400), 100),
    "keys, explicit": (dict(api_keys=KEYS, max_requests_per_tenant=5), 5),
    "open server: the queue alone bounds its one tenant": (dict(), None),
    "open server, explicit": (dict(max_requests_per_tenant=3), 3),
}


@pytest.mark.parametrize("name", LIMIT_CASES)
def test_the_limit_and_its_default(name, engine):
    values, expected = LIMIT_CASES[name]
    app = create_app(engine, ServerSettings(model=engine.model_name, **values))
    assert app.state.promptcache.loop.max_per_tenant == expected


def test_a_limit_of_zero_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="max_requests_per_tenant"):
        ServerSettings(max_requests_per_tenant=0)
    config = tmp_path / "server.toml"
    config.write_text("max-requests-per-tenant = 3\n")
    assert build_settings({}, config_file=config).max_requests_per_tenant == 3

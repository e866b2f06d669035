"""The prompt registry on a live server with the official openai client: versions and the
default version, rendering into Responses and chat completions, tenants kept apart, bad input
refused before any work, and prompts that survive a restart (the SQLite store) and come back
warm with --warm-prompts. The tiny random-weight Llama carries SmolLM2's tokenizer and chat
template, so prompts are rendered exactly as the real model's are."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from live_server import start_server
from server_prompts import KEYS, SYSTEM_PROMPT

from promptcache.server.settings import build_settings

TEMPLATE = SYSTEM_PROMPT + " You are talking to {{customer}} about {{topic}}."


@pytest.fixture(scope="module")
def registry(tiny_llama_dir, keyed_tiny_engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prompts")
    keys_file = tmp / "keys.json"
    keys_file.write_text(json.dumps(KEYS))
    keyed_tiny_engine.flush_cache(include_pinned=True)  # whatever an earlier module left

    def serve(**overrides):
        settings = build_settings(dict(model=str(tiny_llama_dir), default_max_tokens=4,
                                       prompt_store=str(tmp / "prompts.sqlite3"), responses_db=":memory:",
                                       **overrides), keys_file=keys_file)
        return start_server(settings, engine=keyed_tiny_engine)

    server = serve()
    yield server, serve
    server.stop()


def api(server, key="key-alice") -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def ask(server, key="key-alice", **kwargs):
    return server.client(api_key=key).responses.create(model=server.model, input="Hello?", max_output_tokens=4,
                                                       temperature=0, **kwargs)


def test_versions_and_the_default_version(registry):
    server, _ = registry
    http = api(server)
    created = http.post("/v1/prompts", json={"template": "Greet {{name}} politely.", "name": "greeter"}).json()
    pid = created["id"]
    assert created["version"] == created["default_version"] == "1" and created["variables"] == ["name"]
    second = http.post(f"/v1/prompts/{pid}/versions", json={"template": "Greet {{name}} in French."}).json()
    assert second["version"] == "2" and second["default_version"] == "1" and second["latest_version"] == "2"
    assert http.get(f"/v1/prompts/{pid}").json()["template"] == "Greet {{name}} politely."
    assert http.get(f"/v1/prompts/{pid}", params={"version": "2"}).json()["template"] == "Greet {{name}} in French."
    assert http.get(f"/v1/prompts/{pid}/versions/2").json()["version"] == "2"
    assert [v["version"] for v in http.get(f"/v1/prompts/{pid}/versions").json()["data"]] == ["1", "2"]
    assert pid in [p["id"] for p in http.get("/v1/prompts").json()["data"]]

    # A reference without a version renders the default; naming one renders that one. Each
    # equals the same request with the rendered text as its instructions.
    def same_as_instructions(text, **prompt):
        used = ask(server, prompt={"id": pid, "variables": {"name": "Ann"}, **prompt})
        plain = ask(server, instructions=text)
        assert used.usage.input_tokens == plain.usage.input_tokens and used.output_text == plain.output_text
        return used

    used = same_as_instructions("Greet Ann politely.")
    assert used.prompt.id == pid and used.prompt.version == "1"
    assert same_as_instructions("Greet Ann in French.", version="2").prompt.version == "2"
    assert http.post(f"/v1/prompts/{pid}/default", json={"version": "2"}).json()["default_version"] == "2"
    assert same_as_instructions("Greet Ann in French.").prompt.version == "2"

    # Chat completions take the same field (extra_body in the client), as a leading system turn.
    chat = server.client(api_key="key-alice").chat.completions.create
    messages = [{"role": "user", "content": "Hello?"}]
    with_prompt = chat(model=server.model, messages=messages, max_tokens=4, temperature=0,
                       extra_body={"prompt": {"id": pid, "version": 1, "variables": {"name": "Bo"}}})
    plain = chat(model=server.model, messages=[{"role": "system", "content": "Greet Bo politely."}, *messages],
                 max_tokens=4, temperature=0)
    assert with_prompt.usage.prompt_tokens == plain.usage.prompt_tokens
    assert with_prompt.choices[0].message.content == plain.choices[0].message.content

    assert http.delete(f"/v1/prompts/{pid}").json()["deleted"] is True
    assert http.get(f"/v1/prompts/{pid}").status_code == 404
    with pytest.raises(openai.NotFoundError):
        ask(server, prompt={"id": pid, "variables": {"name": "Ann"}})


def test_another_tenants_prompt_is_not_found(registry):
    server, _ = registry
    pid = api(server).post("/v1/prompts", json={"template": "Secret {{x}}"}).json()["id"]
    bob = api(server, "key-bob")
    for response in (bob.get(f"/v1/prompts/{pid}"), bob.get(f"/v1/prompts/{pid}/versions"),
                     bob.post(f"/v1/prompts/{pid}/versions", json={"template": "Mine {{x}}"}),
                     bob.post(f"/v1/prompts/{pid}/default", json={"version": "1"}), bob.delete(f"/v1/prompts/{pid}")):
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert pid not in [p["id"] for p in bob.get("/v1/prompts").json()["data"]]
    with pytest.raises(openai.NotFoundError):
        ask(server, "key-bob", prompt={"id": pid, "variables": {"x": "1"}})
    assert api(server).get(f"/v1/prompts/{pid}").status_code == 200  # still alice's


BAD_REGISTRATIONS = [
    ({"template": ""}, "template"),
    ({"template": "x" * 131_073}, "template"),
    ({"template": " ".join(f"{{{{v{i}}}}}" for i in range(65))}, "template"),
    ({"template": "Hello {{user name}}"}, "template"),
    ({"template": "Hello {{ a.b }}"}, "template"),
    ({"template": "Hi", "colour": "red"}, "colour"),
    ({"template": "Hi", "name": "n" * 300}, "name"),
]


@pytest.mark.parametrize(("body", "param"), BAD_REGISTRATIONS)
def test_bad_registrations_are_400s_naming_the_field(registry, body, param):
    server, _ = registry
    response = api(server).post("/v1/prompts", json=body)
    assert response.status_code == 400, response.text
    assert param in (response.json()["error"]["param"] or "") + response.json()["error"]["message"]


def test_bad_references_are_clear_errors(registry):
    server, _ = registry
    http = api(server)
    pid = http.post("/v1/prompts", json={"template": "Talk to {{who}}."}).json()["id"]
    cases = [
        ({"id": pid}, 400, "prompt.variables"),  # who is missing
        ({"id": pid, "variables": {"who": "A", "whom": "B"}}, 400, "prompt.variables"),
        ({"id": pid, "variables": {"who": {"type": "input_image", "image_url": "x"}}}, 400, None),
        ({"id": pid, "version": "two", "variables": {"who": "A"}}, 400, "prompt.version"),
        ({"id": pid, "version": "9", "variables": {"who": "A"}}, 404, "prompt.id"),
        ({"id": "pmpt_" + "0" * 32, "variables": {"who": "A"}}, 404, "prompt.id"),
        ({"id": "p" * 65}, 400, "prompt.id"),
        ({"id": pid, "variables": {f"v{i}": "x" for i in range(65)}}, 400, "prompt.variables"),
    ]
    for prompt, status, param in cases:
        response = http.post("/v1/responses", json={"model": server.model, "input": "Hi", "prompt": prompt})
        assert response.status_code == status, (prompt, response.text)
        if param:
            assert response.json()["error"]["param"] == param, response.text
    # A value holding {{...}} is inserted as written, not expanded again.
    used = ask(server, prompt={"id": pid, "variables": {"who": "{{who}}"}})
    assert used.usage.input_tokens == ask(server, instructions="Talk to {{who}}.").usage.input_tokens
    assert http.get(f"/v1/prompts/{pid}", params={"version": "0"}).status_code == 400
    # Responses' input is optional with a prompt (the template is the whole request), not without.
    alone = server.client(api_key="key-alice").responses.create(
        model=server.model, prompt={"id": pid, "variables": {"who": "Ann"}}, max_output_tokens=2)
    assert alone.usage.input_tokens > 0 and alone.status in ("completed", "incomplete")
    assert http.post("/v1/responses", json={"model": server.model}).status_code == 400
    assert http.post(f"/v1/prompts/{pid}/default", json={"version": "3"}).status_code == 404


def test_a_warm_prompt_past_the_pin_budget_is_refused_and_not_stored(registry):
    server, _ = registry
    flood = api(server, "key-flood")  # a 0.33 MiB quota: ~1,000 tokens of this model's KV do not fit
    response = flood.post("/v1/prompts", json={"template": SYSTEM_PROMPT * 3 + " {{x}}", "warm": True})
    assert response.status_code == 409 and response.json()["error"]["code"] == "pin_budget_exceeded"
    assert flood.get("/v1/prompts").json()["data"] == []
    assert flood.post("/v1/prompts", json={"template": SYSTEM_PROMPT * 3 + " {{x}}"}).status_code == 200  # cold: fine


def test_a_tenants_template_storage_is_bounded(registry, monkeypatch):
    server, _ = registry
    from promptcache.server.prompts import routes

    monkeypatch.setattr(routes, "LIMITS", dataclasses.replace(routes.LIMITS, max_tenant_chars=1000))
    bob = api(server, "key-bob")  # bob has stored nothing so far
    pid = bob.post("/v1/prompts", json={"template": "x" * 600}).json()["id"]
    refused = bob.post(f"/v1/prompts/{pid}/versions", json={"template": "y" * 600})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "prompt_storage_limit"
    assert api(server).post("/v1/prompts", json={"template": "z" * 600}).status_code == 200  # alice's own room
    bob.delete(f"/v1/prompts/{pid}")
    assert bob.post("/v1/prompts", json={"template": "y" * 600}).status_code == 200  # room again


def test_concurrent_registrations_stop_at_the_tenants_limits(registry, monkeypatch):
    """Each registration counts and stores under its tenant's lock: 12 at once with room for 3
    store 3 (before, each counted below the limit before any stored, and all 12 were kept)."""
    server, _ = registry
    from promptcache.server.prompts import routes

    flood = api(server, "key-flood")
    held = len(flood.get("/v1/prompts").json()["data"])
    monkeypatch.setattr(routes, "LIMITS", dataclasses.replace(routes.LIMITS, max_prompts=held + 3, max_versions=3))

    def burst(path: str) -> list[int]:
        with ThreadPoolExecutor(12) as pool:
            return list(pool.map(lambda i: api(server, "key-flood").post(path, json={"template": f"t{i} {{{{x}}}}"})
                                 .status_code, range(12)))

    statuses = burst("/v1/prompts")
    assert sorted(statuses) == [200] * 3 + [429] * 9
    assert len(flood.get("/v1/prompts").json()["data"]) == held + 3
    pid = flood.get("/v1/prompts").json()["data"][-1]["id"]
    assert sorted(burst(f"/v1/prompts/{pid}/versions")) == [200] * 2 + [429] * 10  # version 1 + 2 more
    assert len(flood.get(f"/v1/prompts/{pid}/versions").json()["data"]) == 3


@pytest.mark.parametrize("store", ["ftp://host/x", "mlflow://host:5000", "  "])
def test_a_malformed_prompt_store_fails_at_start(store):
    with pytest.raises(ValueError, match="prompt-store|MLflow"):
        build_settings(dict(prompt_store=store))


# Last in the module: it stops the module's server.
def test_prompts_survive_a_restart_and_come_back_warm(registry):
    server, serve = registry
    http = api(server)
    warm = http.post("/v1/prompts", json={"template": TEMPLATE, "warm": True}).json()
    assert warm["warm"] is True and warm["warm_tokens"] >= 320  # the ~330-token static prefix, whole blocks
    cold = http.post("/v1/prompts", json={"template": "Cold {{x}}", "name": "cold"}).json()
    server.stop()  # the module's server is down: later requests go to the restarted one
    server.engine.flush_cache(include_pinned=True)  # as a new process finds it: nothing cached or pinned
    restarted = serve(warm_prompts=True)  # a new app and store over the same file, re-warmed at start-up
    try:
        again = api(restarted)
        assert again.get(f"/v1/prompts/{cold['id']}").json()["name"] == "cold"
        prompt = {"id": warm["id"], "variables": {"customer": "Ann", "topic": "refunds"}}
        for body in ({"input": "Hello?", "prompt": prompt}, {"prompt": prompt},  # Responses, by the prompt alone
                     {"messages": [{"role": "user", "content": "Hello?"}], "prompt": prompt}):  # chat
            explained = again.post("/v1/cache/explain", json={"model": restarted.model, **body}).json()
            assert explained["cached_tokens"] >= warm["warm_tokens"], explained  # before any request
        first = ask(restarted, prompt=prompt)
        assert first.usage.input_tokens_details.cached_tokens >= warm["warm_tokens"]
    finally:
        restarted.stop()

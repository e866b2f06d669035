"""Bad input is a 4xx in the dialect's own shape, never a 500 (issue 25, item 5): a lone
surrogate anywhere in a field typed "any JSON" (tool names, schemas, tool_choice, metadata
keys) or in /tokenize, and token ids outside the vocabulary on /v1/context, /v1/cache/pin and
/v1/cache/explain, where a 2**32 id used to reach the 32-bit block-key packer.

Bodies are sent as raw JSON text, since a lone surrogate is valid JSON ("\\ud800") that clients
written in stricter languages could not even build."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import start_server

from promptcache.server.core.fields import lone_surrogate
from promptcache.server.settings import ServerSettings

BAD = "name\ud800"  # a lone surrogate: JSON allows it, UTF-8 cannot encode it


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    live = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=2, responses_db=":memory:",
                                       records_db=":memory:"))
    yield live
    live.stop()


def post(server, path: str, body: dict, **params) -> httpx.Response:
    # json.dumps escapes the surrogate as \ud800, as any client's JSON encoder would.
    return httpx.post(server.url + path, content=json.dumps(body), params=params,
                      headers={"Content-Type": "application/json"}, timeout=60)


def chat_tool(name: str, schema: dict | None = None) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": schema or {"type": "object"}}}


def surrogate_bodies(model: str) -> list[tuple[str, dict, str]]:
    """(path, body, the parameter the 400 names) for each any-typed field."""
    user = [{"role": "user", "content": "hi"}]
    chat = {"model": model, "messages": user, "max_tokens": 1}
    city = {"type": "object", "properties": {BAD: {"type": "string"}}}
    return [
        ("/v1/chat/completions", {**chat, "tools": [chat_tool(BAD)]}, "tools[0]"),
        ("/v1/chat/completions", {**chat, "tools": [chat_tool("weather", city)]}, "tools[0]"),
        ("/v1/chat/completions", {**chat, "tool_choice": {"type": "function", "function": {"name": BAD}}},
         "tool_choice"),
        ("/v1/chat/completions", {**chat, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "description": BAD}}}}, "response_format"),
        ("/v1/chat/completions", {**chat, "messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": BAD, "arguments": "{}"}}]}, *user]},
         "messages[0].tool_calls[0]"),
        ("/v1/messages", {"model": model, "max_tokens": 1, "messages": user,
                          "tools": [{"name": "weather", "input_schema": city}]}, "tools[0].input_schema"),
        ("/v1/responses", {"model": model, "input": "hi", "metadata": {BAD: "v"}}, "metadata"),
        ("/v1/responses", {"model": model, "input": "hi", "metadata": {"k": BAD}}, "metadata"),
        ("/v1/responses", {"model": model, "input": "hi", "tools": [{"type": "function", "name": BAD}]},
         "tools[0]"),
        ("/v1/responses", {"model": model, "input": "hi", "text": {"format": {"type": BAD}}}, "text"),
        ("/tokenize", {"model": model, "prompt": BAD}, "prompt"),
        (f"/v1beta/models/{model}:generateContent", {
            "contents": [{"parts": [{"text": "hi"}]}],
            "tools": [{"functionDeclarations": [{"name": "weather", "parameters": city}]}]}, None),
    ]


def test_lone_surrogates_anywhere_are_400s_in_the_dialects_shape(server):
    for path, body, param in surrogate_bodies(server.model):
        reply = post(server, path, body)
        assert reply.status_code == 400, (path, body, reply.text)
        error = reply.json()
        if path.startswith("/v1/messages"):
            assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        elif path.startswith("/v1beta"):
            assert error["error"]["status"] == "INVALID_ARGUMENT"
        elif path != "/tokenize":
            assert error["error"]["param"] == param, (path, error)


def test_the_server_still_serves_after_them(server):
    reply = post(server, "/v1/chat/completions", {"model": server.model, "max_tokens": 1,
                                                  "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=12))
def test_lone_surrogate_is_found_exactly_when_utf8_cannot_encode_the_value(value):
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        encodable = True
    except UnicodeEncodeError:
        encodable = False
    assert (lone_surrogate(value) is None) == encodable


def test_a_deeply_nested_value_does_not_exhaust_the_stack():
    value: object = BAD
    for _ in range(100_000):
        value = [value]
    assert lone_surrogate(value) == "[0]" * 100_000


def id_bodies(model: str, ids: list[int]) -> list[tuple[str, dict, dict]]:
    return [
        ("/v1/context", {"model": model, "prompt": ids}, {}),
        ("/v1/cache/pin", {"prompt": ids}, {}),
        ("/v1/cache/explain", {"model": model, "prompt": ids}, {}),
        ("/v1/cache/explain", {"model": model, "prompt": [ids]}, {"dialect": "completions"}),
    ]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.integers(min_value=0, max_value=2**63 - 1), at=st.integers(min_value=0, max_value=3))
def test_token_ids_outside_the_vocabulary_are_400s(server, bad, at):
    vocab = server.engine.tokenizer.vocab_size
    bad = vocab + bad % (2**40) if bad % 2 else max(bad, vocab)  # small and huge ids past the end
    ids = [1, 2, 3]
    ids.insert(at, bad)
    for path, body, params in id_bodies(server.model, ids):
        reply = post(server, path, body, **params)
        assert reply.status_code == 400, (path, ids, reply.text)
        assert reply.json()["error"]["param"] == "prompt", reply.text


def test_the_last_id_of_the_vocabulary_is_accepted(server):
    last = server.engine.tokenizer.vocab_size - 1
    reply = post(server, "/v1/cache/explain", {"model": server.model, "prompt": [1, 2, last]})
    assert reply.status_code == 200 and reply.json()["prompt_tokens"] == 3

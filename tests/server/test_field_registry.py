"""No silent field: every documented request field of every dialect either has an effect or is
named in `x-ignored-fields` when sent.

The walk takes each dialect's request models and every model reachable from them, and checks
each declared field against the registry the server consults (core/handled.py): it must be
listed as handled or as noted (accepted, without effect, named). A field added to a model and
listed in neither fails here; and whatever is not listed as handled is named at run time, so
it is never ignored in silence either way. Keys inside the free-form fields (`tools`,
`response_format`, `text`) are named by the structure code; checked live, with the `openai`
client, on the tiny model.
"""

from __future__ import annotations

import json
import typing

import httpx
import pytest
from live_server import start_server
from pydantic import BaseModel

from promptcache.server.anthropic.schema import CountTokensRequest, MessagesRequest
from promptcache.server.core import handled
from promptcache.server.core.lenient import unknown_fields
from promptcache.server.gemini.schema import (CachedContentRequest, CachedContentUpdate, CountTokensRequest,
                                              GenerateContentRequest)
from promptcache.server.openai.responses.schema import ResponsesRequest
from promptcache.server.openai.schema import ChatCompletionRequest, CompletionRequest
from promptcache.server.settings import ServerSettings

REQUESTS = {
    "openai": [ChatCompletionRequest, CompletionRequest, ResponsesRequest],
    "anthropic": [MessagesRequest, CountTokensRequest],
    "gemini": [GenerateContentRequest, CachedContentRequest, CachedContentUpdate, CountTokensRequest],
}


def _models(annotation) -> typing.Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models(arg)


def request_models(dialect: str) -> list[type[BaseModel]]:
    """The dialect's request bodies and every model their fields can hold."""
    seen: dict[type, None] = {}
    todo = list(REQUESTS[dialect])
    while todo:
        model = todo.pop()
        if model not in seen:
            seen[model] = None
            todo += [m for field in model.model_fields.values() for m in _models(field.annotation)]
    return list(seen)


@pytest.mark.parametrize("dialect", sorted(REQUESTS))
def test_every_documented_field_is_handled_or_noted(dialect):
    for model in request_models(dialect):
        key = handled.key(model)
        assert key in handled.HANDLED, f"{key} is not in core/handled.py"
        acted, noted = handled.HANDLED[key], handled.NOTED.get(key, frozenset())
        assert not acted & noted, key
        unclassified = set(model.model_fields) - acted - noted
        assert not unclassified, f"{key}: {sorted(unclassified)} neither handled nor noted"


def test_a_field_nobody_handles_is_named_when_sent(monkeypatch):
    key = handled.key(ChatCompletionRequest)
    monkeypatch.setitem(handled.HANDLED, key, handled.HANDLED[key] - {"seed"})
    body = {"model": "m", "messages": [{"role": "user", "content": "hi", "name": "ann"}]}
    assert unknown_fields(ChatCompletionRequest.model_validate({**body, "seed": 7})) == \
        (["seed", "messages[0].name"], 2)
    assert unknown_fields(ChatCompletionRequest.model_validate({**body, "seed": None}))[0] == ["messages[0].name"]


def test_noted_fields_and_unread_keys_are_named_live(tiny_server):
    assert handled.NOTED == {"openai.schema:ChatMessage": frozenset({"name"})}  # each one checked here
    client = tiny_server.client()
    chat = client.chat.completions.with_raw_response.create(
        model=tiny_server.model, max_tokens=2, messages=[{"role": "user", "content": "Hi", "name": "ann"}],
        tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}, "cache": 1}}],
        tool_choice="none")
    assert chat.headers["x-ignored-fields"] == "messages[0].name,tools[0].function.cache"
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    described = client.chat.completions.with_raw_response.create(
        model=tiny_server.model, max_tokens=12, messages=[{"role": "user", "content": "Hi"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "answer", "schema": schema, "description": "Yes or no."}})
    assert described.headers["x-ignored-fields"] == "response_format.json_schema.description"
    responses = client.responses.with_raw_response.create(
        model=tiny_server.model, input="Hi", max_output_tokens=2, text={"format": {"type": "text"}, "verbosity": "low"})
    assert responses.headers["x-ignored-fields"] == "text.verbosity"


def test_json_object_with_a_schema_is_enforced_and_its_unenforced_keywords_named(tiny_server):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False, "uniqueItems": True}
    raw = tiny_server.client().chat.completions.with_raw_response.create(
        model=tiny_server.model, max_tokens=12, messages=[{"role": "user", "content": "Hi"}],
        response_format={"type": "json_object", "schema": schema})
    assert "x-ignored-fields" not in raw.headers
    assert "uniqueItems" in raw.headers["x-structured-output-ignored"]
    reply = raw.parse().choices[0]
    assert reply.finish_reason == "stop" and set(json.loads(reply.message.content)) == {"ok"}


def test_with_reject_unknown_fields_a_field_without_effect_is_a_400(tiny_llama_dir):
    server = start_server(ServerSettings(model=str(tiny_llama_dir), reject_unknown_fields=True))
    try:
        chat = {"model": server.model, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
        tool = {"type": "function", "function": {"name": "weather", "cache": 1}}
        for extra, param in (({"tools": [tool], "tool_choice": "none"}, "tools[0].function.cache"),
                             ({"messages": [{"role": "user", "content": "Hi", "name": "ann"}]}, "messages[0].name")):
            r = httpx.post(f"{server.base_url}/chat/completions", json={**chat, **extra}, timeout=60)
            assert r.status_code == 400 and r.json()["error"]["param"] == param
        assert httpx.post(f"{server.base_url}/chat/completions", json=chat, timeout=60).status_code == 200
    finally:
        server.stop()

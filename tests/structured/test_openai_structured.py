"""Structured outputs and tool calls through the official openai client, on a live server.

The tiny random-weight model checks the mechanics (every reply validates, calls come back as
tool_calls, errors name their field); the embedded SmolLM2 in the serving default checks the
client scenarios agents use (tests/structured/test_clients_smollm2.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from live_server import start_server  # noqa: E402

from promptcache.server.settings import ServerSettings  # noqa: E402
from tests.structured.test_constraint import schemas  # noqa: E402

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                   "required": ["city"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    live = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=64))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


class Person(BaseModel):
    name: str = Field(max_length=12)  # a random-weight model writes strings as long as allowed
    age: int = Field(ge=0, le=150)


def test_parse_with_a_pydantic_model(server, client):
    completion = client.chat.completions.parse(model=server.model, messages=ASK, response_format=Person,
                                               max_tokens=200, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, Person)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas)
def test_every_reply_validates_against_its_schema(server, client, schema):
    completion = client.chat.completions.create(
        model=server.model, messages=ASK, max_tokens=400, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}})
    assert completion.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)


def test_a_required_tool_call_comes_back_as_tool_calls_then_round_trips(server, client):
    first = client.chat.completions.create(model=server.model, messages=ASK, tools=[WEATHER], tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=60, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)
    history = ASK + [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}]
    second = client.chat.completions.create(model=server.model, messages=history, tools=[WEATHER],
                                            tool_choice="none", max_tokens=30, temperature=0)
    assert second.choices[0].finish_reason in ("stop", "length") and not second.choices[0].message.tool_calls
    # Turn 2 starts with turn 1's prompt: the tool list and the question were served from the cache.
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens // 16 * 16 - 16 > 0


def test_a_streamed_tool_call_arrives_as_deltas(server, client):
    choice = {"type": "function", "function": {"name": "get_weather"}}
    stream = client.chat.completions.create(model=server.model, messages=ASK, tools=[WEATHER], tool_choice=choice,
                                            max_tokens=60, temperature=0, stream=True)
    name, arguments, reasons = "", "", []
    for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            name += delta_call.function.name or ""
            arguments += delta_call.function.arguments or ""
        reasons.append(chunk.choices[0].finish_reason)
    assert name == "get_weather" and "city" in json.loads(arguments) and reasons[-1] == "tool_calls"


def test_a_non_strict_schema_names_what_it_ignores(server):
    raw = server.client().chat.completions.with_raw_response.create(
        model=server.model, messages=ASK, max_tokens=40, temperature=0,
        response_format={"type": "json_schema", "json_schema": {
            "name": "s", "strict": False, "schema": {"type": "array", "uniqueItems": True, "maxItems": 2,
                                                     "items": {"type": "integer", "minimum": 0, "maximum": 9}}}})
    assert "uniqueItems" in raw.headers["x-structured-output-ignored"]
    assert isinstance(json.loads(raw.parse().choices[0].message.content), list)


def _nested(depth: int) -> dict:
    schema = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize("fields, param, words", [
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "s", "strict": True,
                                                                  "schema": {"type": "array", "uniqueItems": True}}}),
     "response_format", "uniqueItems"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": "nope"}}),
     "response_format", "JSON Schema object"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": _nested(40)}}),
     "response_format", "limit of 32 levels"),
    (dict(response_format={"type": "json_schema", "json_schema": {
        "name": "s", "schema": {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 64}
                                                                 for i in range(1200)}}}}),
     "response_format", "limit of 65536 bytes"),
    (dict(response_format={"type": "yaml"}), "response_format", "not supported"),
    (dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_time"}}),
     "tool_choice", "not in tools"),
    (dict(extra_body={"structured_outputs": {"regex": "[a-"}}), "structured_outputs", "regex"),
])
def test_bad_structured_requests_are_400s_naming_the_field(server, client, fields, param, words):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=server.model, messages=ASK, max_tokens=8, **fields)
    assert err.value.body["param"] == param and words in err.value.body["message"]


def test_responses_text_format_is_enforced(server, client):
    schema = Person.model_json_schema()
    response = client.responses.create(model=server.model, input="Describe Alice.", max_output_tokens=200,
                                       text={"format": {"type": "json_schema", "name": "person", "schema": schema,
                                                        "strict": True}}, temperature=0)
    assert response.status == "completed" and response.text.format.type == "json_schema"
    Person.model_validate_json(response.output_text)
    parsed = client.responses.parse(model=server.model, input="Describe Alice.", text_format=Person,
                                    max_output_tokens=200, temperature=0)
    assert isinstance(parsed.output_parsed, Person)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=server.model, input="x", text={"format": {"type": "xml"}})
    assert err.value.body["param"] == "text.format"

"""Anthropic structured outputs through the official `anthropic` client, against a live server on
the embedded SmolLM2: GA `output_config.format`, the beta's `output_format` (sent with its
`anthropic-beta` header), streamed and not, and the client's own `messages.parse`. Each reply
is held by the same decoder as OpenAI's `response_format`, so it parses as JSON and validates
against the schema. Unsupported shapes, a schema the grammar cannot enforce, and a format
combined with callable tools are Anthropic-shaped 400s naming the field; tool `strict` decides
whether an unenforceable keyword in a tool's schema is a 400 or a header.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import pydantic
import pytest

CITY = {"type": "object", "additionalProperties": False, "required": ["city", "population"],
        "properties": {"city": {"type": "string", "maxLength": 20},
                       "population": {"type": "integer", "minimum": 0, "maximum": 99999999}}}
QUESTION = [{"role": "user", "content": "Give the largest city of France and its population as JSON."}]
GREEDY = {"temperature": 0}
BETA = "structured-outputs-2025-11-13"


@pytest.fixture(scope="module")
def claude(smollm2_server):
    """The official client on the shared SmolLM2 server."""
    return anthropic.Anthropic(base_url=smollm2_server.url, api_key="unused", max_retries=0)


def _json_text(message) -> dict:
    assert message.stop_reason == "end_turn"
    (block,) = message.content
    value = json.loads(block.text)
    jsonschema.validate(value, CITY)
    return value


def test_both_spellings_hold_the_reply_to_the_schema_streamed_or_not(smollm2_server, claude):
    ga = claude.messages.create(model=smollm2_server.model, max_tokens=60, messages=QUESTION,
                                output_config={"format": {"type": "json_schema", "schema": CITY}},
                                extra_body=GREEDY)
    _json_text(ga)
    with claude.beta.messages.stream(model=smollm2_server.model, max_tokens=60, messages=QUESTION, betas=[BETA],
                                     extra_body={**GREEDY, "output_format": {"type": "json_schema",
                                                                             "schema": CITY}}) as stream:
        deltas = [e.delta.text for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert len(deltas) > 1  # streamed as it is generated, not held back
    assert "".join(deltas) == final.content[0].text == ga.content[0].text
    _json_text(final)


class City(pydantic.BaseModel):
    city: str
    country: str


def test_the_clients_parse_helper_gets_a_validated_object(smollm2_server, claude):
    parsed = claude.messages.parse(model=smollm2_server.model, max_tokens=60, messages=QUESTION, output_format=City,
                                   extra_body=GREEDY)
    assert isinstance(parsed.parsed_output, City)


def _post(server, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/messages", timeout=30,
                      json={"model": server.model, "max_tokens": 4, "messages": QUESTION, **body})


WEATHER = {"name": "get_weather", "input_schema": {
    "type": "object", "properties": {"cities": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}}}
SCHEMA = {"type": "json_schema", "schema": CITY}


@pytest.mark.parametrize("body, named", [
    ({"output_config": {"format": {"type": "text"}}}, "output_config.format.type"),
    ({"output_format": {"type": "json_schema"}}, "output_format.schema"),
    ({"output_config": {"format": {**SCHEMA, "name": "x"}}}, "output_config.format.name"),
    ({"output_config": {"format": SCHEMA}, "output_format": SCHEMA}, "output_format"),
    ({"output_config": {"effort": "low"}}, "output_config.effort"),
    ({"output_config": {"task_budget": {"total": 10}}}, "output_config.task_budget"),
    ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "wat"}}}}, "output_config.format"),
    ({"output_format": {"type": "json_schema", "schema": {"type": "array", "uniqueItems": True}}}, "output_format"),
    ({"output_config": {"format": SCHEMA}, "tools": [WEATHER]}, "output_config.format"),
    ({"tools": [{**WEATHER, "strict": True}]}, "uniqueItems"),
])
def test_unsupported_shapes_are_anthropic_400s_naming_the_field(smollm2_server, body, named):
    response = _post(smollm2_server, body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert named in error["error"]["message"]


def test_neutral_settings_are_accepted_and_a_lenient_tool_names_what_it_ignores(smollm2_server):
    assert _post(smollm2_server, {"output_config": {"effort": "high"}}).status_code == 200
    both = _post(smollm2_server, {"output_config": {"format": SCHEMA}, "tools": [WEATHER],
                                  "tool_choice": {"type": "none"}})
    assert both.status_code == 200, both.text
    lenient = _post(smollm2_server, {"tools": [WEATHER], "tool_choice": {"type": "any"}})
    assert lenient.status_code == 200, lenient.text
    assert "uniqueItems" in lenient.headers["x-structured-output-ignored"]

"""Dialect fields -> output constraints, and the generic tool-call format, on fixed inputs."""

from __future__ import annotations

import json

import jsonschema
import pytest

from promptcache.engine.api import EngineInputError
from promptcache.server.structured.formats import from_response_format, from_structured_outputs, one_spec
from promptcache.server.structured.tools import (
    TOOLS_HEADER, Tool, ToolCall, ToolChoice, assistant_text, check_choice, grammar, parse_reply, system_text,
)

WEATHER = Tool("get_weather", "Current weather for a city",
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TIME = Tool("get_time", "Local time in a timezone", {"type": "object", "properties": {"tz": {"type": "string"}}})


def test_response_format_shapes():
    assert from_response_format(None) is None and from_response_format({"type": "text"}) is None
    assert from_response_format({"type": "json_object"}).kind == "json_object"
    chat = from_response_format({"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"},
                                                                        "strict": True}})
    flat = from_response_format({"type": "json_schema", "name": "p", "schema": {"type": "object"}}, "text.format")
    assert (chat.kind, chat.strict, json.loads(chat.source)) == ("json_schema", True, {"type": "object"})
    assert (flat.strict, flat.param) == (False, "text.format")


@pytest.mark.parametrize("value, words", [
    ("json", "must be an object"),
    ({"type": "xml"}, "'xml' is not supported"),
    ({"type": "json_schema", "json_schema": {"name": "p"}}, "must be a JSON Schema object"),
])
def test_bad_response_formats_name_the_field(value, words):
    with pytest.raises(EngineInputError, match=words) as err:
        from_response_format(value)
    assert err.value.param == "response_format"


def test_structured_outputs_extension():
    assert from_structured_outputs({"regex": "[0-9]+"}).kind == "regex"
    assert json.loads(from_structured_outputs({"choice": ["a", "b"]}).source) == ["a", "b"]
    assert from_structured_outputs({"json": {"type": "object"}}).kind == "json_schema"
    assert from_structured_outputs({"grammar": 'root ::= "a"'}).kind == "gbnf"
    assert from_structured_outputs({"grammar": 'start: "a"'}).kind == "lark"
    for bad, words in [({"regex": "a", "choice": ["a"]}, "exactly one"), ({"xml": "a"}, "xml is not supported"),
                       ({"choice": "a"}, "list of strings")]:
        with pytest.raises(EngineInputError, match=words):
            from_structured_outputs(bad)
    with pytest.raises(EngineInputError, match="cannot be combined"):
        one_spec(from_response_format({"type": "json_object"}), from_structured_outputs({"regex": "a"}))


def test_the_tool_list_renders_the_same_whatever_the_choice():
    text = system_text("Be brief.", [WEATHER, TIME])
    assert text.startswith("Be brief.\n\n" + TOOLS_HEADER)
    assert text.splitlines()[-2:] == [json.dumps({"name": t.name, "description": t.description,
                                                  "parameters": t.parameters}, separators=(", ", ": "))
                                      for t in (WEATHER, TIME)]
    assert system_text(None, [WEATHER]).startswith(TOOLS_HEADER)


@pytest.mark.parametrize("choice, valid, invalid", [
    (ToolChoice("auto"), [{"response": "hi"}, {"tool_calls": [{"name": "get_time", "arguments": {}}]}], [{"x": 1}]),
    (ToolChoice("required"), [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}],
     [{"response": "hi"}, {"tool_calls": []}]),
    (ToolChoice("named", "get_time"), [{"tool_calls": [{"name": "get_time", "arguments": {"tz": "UTC"}}]}],
     [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}]),
    (ToolChoice("none"), [{"response": "hi"}], [{"tool_calls": [{"name": "get_time", "arguments": {}}]}]),
    (ToolChoice("required", parallel=False), [{"tool_calls": [{"name": "get_time", "arguments": {}}]}],
     [{"tool_calls": [{"name": "get_time", "arguments": {}}, {"name": "get_time", "arguments": {}}]}]),
])
def test_tool_choice_grammars_allow_exactly_what_they_should(accepts, choice, valid, invalid):
    """Checked where decoding enforces it, the compiled grammar's token matcher, on the text a
    model writes (as assistant_text renders it), and by the JSON schema it is built from."""
    spec = grammar([WEATHER, TIME], choice)
    schema = json.loads(spec.source)
    for value in valid:
        jsonschema.validate(value, schema)
        assert accepts(spec, json.dumps(value)), value
    for value in invalid:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(value, schema)
        assert not accepts(spec, json.dumps(value)), value


def test_choices_that_cannot_be_met_are_refused():
    with pytest.raises(EngineInputError, match="not in tools: 'nope'"):
        check_choice([WEATHER], ToolChoice("named", "nope"))
    with pytest.raises(EngineInputError, match="lists none"):
        check_choice([], ToolChoice("required"))


def test_replies_parse_into_calls_or_an_answer_and_render_back_identically():
    reply = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Zürich"}}]}'
    calls, answer = parse_reply(reply)
    assert calls == [ToolCall("get_weather", {"city": "Zürich"})] and answer is None
    assert assistant_text(calls, None) == reply
    assert parse_reply('{"response": "It is sunny."}') == ([], "It is sunny.")
    assert parse_reply('{"tool_calls": [{"name": "get_w') == ([], '{"tool_calls": [{"name": "get_w')

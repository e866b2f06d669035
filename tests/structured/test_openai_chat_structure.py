"""OpenAI chat's structured fields on fixed inputs: which constraint, which prompt, which reply."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from promptcache.engine.api import EngineInputError
from promptcache.server.structured.openai_chat import chat_structure, prompt_turns, reply_message
from promptcache.server.structured.tools import TOOLS_HEADER

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@dataclass
class Msg:
    role: str
    content: str = ""
    tool_calls: list | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        return self.content


def test_no_structure_fields_means_free_text():
    assert chat_structure().spec is None


def test_tools_join_the_system_turn_and_round_trips_render_as_generated():
    structure = chat_structure(tools=[WEATHER], tool_choice="auto")
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    turns = prompt_turns([Msg("system", "Be brief."), Msg("user", "Weather in Oslo?"),
                          Msg("assistant", tool_calls=[call]), Msg("tool", "12 C", tool_call_id="call_1")], structure)
    assert [t.role for t in turns] == ["system", "user", "assistant", "tool"]
    assert turns[0].content.startswith("Be brief.\n\n" + TOOLS_HEADER)
    assert turns[2].content == '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}'
    assert json.loads(turns[3].content) == {"tool_call_id": "call_1", "content": "12 C"}


def test_a_reply_with_calls_becomes_tool_calls():
    structure = chat_structure(tools=[WEATHER], tool_choice="required")
    content, calls, reason = reply_message(
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}', structure, "stop")
    assert content is None and reason == "tool_calls"
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"
    assert reply_message('{"response": "Sunny."}', structure, "stop") == ("Sunny.", [], "stop")
    # cut inside its only call: no call, and never the tool format as content
    assert reply_message('{"tool_calls": [{"na', structure, "length") == (None, [], "length")


@pytest.mark.parametrize("fields, param", [
    (dict(tools=[WEATHER], tool_choice="sometimes"), "tool_choice"),
    (dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
    (dict(tool_choice="required"), "tool_choice"),
    (dict(tools=[WEATHER, WEATHER]), "tools"),
    (dict(tools=[{"type": "code_interpreter"}]), "tools"),
    (dict(tools=[WEATHER], response_format={"type": "json_object"}), "response_format"),
    (dict(response_format={"type": "json_object"}, structured_outputs={"regex": "a"}), "structured_outputs"),
])
def test_conflicting_or_unmeetable_fields_are_400s_naming_the_field(fields, param):
    with pytest.raises(EngineInputError) as err:
        chat_structure(**fields)
    assert err.value.param == param


def test_listed_tools_with_choice_none_and_a_format_use_the_format():
    structure = chat_structure(tools=[WEATHER], tool_choice="none", response_format={"type": "json_object"})
    assert structure.spec.kind == "json_object" and not structure.calls_allowed and structure.uses_tools

"""Tools in the Anthropic dialect, through the official `anthropic` client against a live server
on the embedded SmolLM2 (whose template has no tool format: the generic one is used).

A full round trip: `tool_choice: any` forces a `tool_use` block whose input follows the tool's
schema (stop_reason "tool_use"), the `tool_result` goes back, and turn 2's prompt starts with
turn 1's prompt and the call exactly as the model generated it (its blocks are read from the
cache). Also the stream's tool_use block with its input_json_delta, `tool_choice` none and a
named tool, `stop_sequences` reported as stop_reason "stop_sequence", and bad choices as 400s.
"""

from __future__ import annotations

import anthropic
import httpx
import jsonschema
import pytest

from promptcache.server.anthropic.schema import MessagesRequest
from promptcache.server.anthropic.translate import render_with_plan
from promptcache.server.chat import ChatRenderer
from promptcache.server.structured import tools as generic

WEATHER = {"name": "get_weather", "description": "The current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                            "required": ["city"], "additionalProperties": False}}
TIME = {"name": "get_time", "description": "The local time in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                         "required": ["city"]}}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def server(smollm2_server):
    return smollm2_server


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)


def create(server, client, messages, max_tokens: int = 40, **kw):
    return client.messages.create(model=server.model, max_tokens=max_tokens, tools=[WEATHER, TIME],
                                  messages=messages, extra_body=GREEDY, **kw)


def test_a_tool_round_trip_extends_the_generated_call_and_reads_turn_one_from_the_cache(server, client):
    first = create(server, client, QUESTION, tool_choice={"type": "any"})
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name in ("get_weather", "get_time") and call.id.startswith("toolu_")
    jsonschema.validate(call.input, WEATHER["input_schema"])
    # The call is rendered back as the grammar had the model write it: the same tokens.
    written = generic.assistant_text([generic.ToolCall(call.name, call.input)], None)
    assert first.usage.output_tokens == len(server.engine.tokenizer.encode(written, add_special_tokens=False))

    turn2 = [*QUESTION, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C, sunny"}]}]
    renderer = ChatRenderer(server.engine.tokenizer)
    body = lambda messages: MessagesRequest.model_validate(  # noqa: E731
        {"model": server.model, "max_tokens": 8, "tools": [WEATHER, TIME], "messages": messages})
    prompt1, prompt2 = (render_with_plan(body(m), renderer)[0] for m in (QUESTION, turn2))
    assert prompt2.text.startswith(prompt1.text + written)
    assert prompt2.tokens[:len(prompt1.tokens)] == prompt1.tokens
    second = create(server, client, turn2, max_tokens=2)
    assert second.usage.cache_read_input_tokens >= len(prompt1.tokens) // 16 * 16
    assert second.stop_reason in ("tool_use", "end_turn", "max_tokens")


def test_the_stream_sends_a_tool_use_block_with_its_input_as_a_json_delta(server, client):
    with client.messages.stream(model=server.model, max_tokens=60, tools=[WEATHER, TIME], messages=QUESTION,
                                tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e for e in events if e.type == "content_block_start"]
    assert [s.content_block.type for s in starts] == ["tool_use"]
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert all(d.type == "input_json_delta" for d in deltas)
    assert final.stop_reason == "tool_use" and final.content[0].name == "get_weather"
    jsonschema.validate(final.content[0].input, WEATHER["input_schema"])


def test_tool_choice_none_answers_in_text(server, client):
    reply = create(server, client, QUESTION, max_tokens=8, tool_choice={"type": "none"})
    assert [b.type for b in reply.content] == ["text"] and reply.stop_reason in ("end_turn", "max_tokens")


def test_a_stop_sequence_met_is_named(server, client):
    plain = client.messages.create(model=server.model, max_tokens=12, messages=QUESTION, extra_body=GREEDY)
    words = plain.content[0].text.split()
    assert len(words) >= 3
    stop = " " + words[2]
    cut = client.messages.create(model=server.model, max_tokens=12, messages=QUESTION, extra_body=GREEDY,
                                 stop_sequences=["never-in-this-reply", stop])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert plain.content[0].text.startswith(cut.content[0].text) and stop not in cut.content[0].text
    assert plain.stop_sequence is None


@pytest.mark.parametrize("choice, named", [
    ({"type": "tool", "name": "nope"}, "nope"),
    ({"type": "sometimes"}, "tool_choice"),
])
def test_a_bad_tool_choice_is_a_400_naming_it(server, choice, named):
    body = {"model": server.model, "max_tokens": 4, "messages": QUESTION, "tools": [WEATHER], "tool_choice": choice}
    r = httpx.post(server.url + "/v1/messages", json=body)
    assert r.status_code == 400
    assert r.json()["type"] == "error" and named in r.json()["error"]["message"]

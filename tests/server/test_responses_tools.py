"""Function tools in the Responses API, through the official `openai` client against a live
server on the embedded SmolLM2 (generic tool format).

A full round trip: `tool_choice: "required"` returns a `function_call` output item whose
arguments follow the tool's schema; turn 2 continues with `previous_response_id` and a
`function_call_output` item, and its prompt is read from the cache up to turn 1's prompt. The
same conversation sent whole by a client that keeps its own history (`function_call` items
included) renders to the same prompt and gets the same greedy reply. The stream sends the call
with its function_call_arguments events.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from promptcache.server.core.usage import reusable_prefix

PARAMETERS = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
              "required": ["city"], "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "The current weather in a city",
          "parameters": PARAMETERS, "strict": True}]
QUESTION = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def server(smollm2_server):
    return smollm2_server


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def test_a_function_call_round_trip_by_previous_response_id_and_by_history(server, client):
    first = client.responses.create(model=server.model, input=QUESTION, tools=TOOLS, tool_choice="required",
                                    temperature=0)
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), PARAMETERS)
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"}
    chained = client.responses.create(model=server.model, previous_response_id=first.id, input=[result],
                                      tools=TOOLS, temperature=0, max_output_tokens=12)
    assert chained.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens // 16 * 16
    # The client that keeps its own history sends the call back as an input item.
    history = [{"role": "user", "content": QUESTION},
               {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
               result]
    whole = client.responses.create(model=server.model, input=history, tools=TOOLS, temperature=0,
                                    max_output_tokens=12)
    assert whole.usage.input_tokens == chained.usage.input_tokens
    assert whole.usage.input_tokens_details.cached_tokens == reusable_prefix(whole.usage.input_tokens, 16)
    assert [o.model_dump(exclude={"id", "call_id"}) for o in whole.output] == \
        [o.model_dump(exclude={"id", "call_id"}) for o in chained.output]
    items = client.responses.input_items.list(chained.id, order="asc").data
    assert [i.type for i in items] == ["function_call_output"]


def test_the_stream_sends_the_call_with_its_argument_events(server, client):
    with client.responses.stream(model=server.model, input=QUESTION, tools=TOOLS, temperature=0,
                                 tool_choice={"type": "function", "name": "get_weather"},
                                 parallel_tool_calls=False) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    (call,) = final.output
    assert call.type == "function_call" and final.parallel_tool_calls is False
    jsonschema.validate(json.loads(call.arguments), PARAMETERS)
    assert client.responses.retrieve(final.id).output[0].call_id == call.call_id


def test_a_named_tool_that_is_not_listed_is_a_400(server, client):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=server.model, input=QUESTION, tools=TOOLS,
                                tool_choice={"type": "function", "name": "nope"})
    assert "nope" in err.value.message

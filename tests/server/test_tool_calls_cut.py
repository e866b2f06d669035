"""Tool calls under a token limit, and a named tool_choice, in every dialect: the official
`openai` and `anthropic` clients and langchain-openai against a live server on the tiny
random-weight model (its calls are nonsense, but the grammar forces their shape).

The oracle is independent of the server's parser: greedy decoding of one prompt is the same
token for token whatever max_tokens says, so a reply cut after k tokens is the first k tokens
of the full reply, whose bytes its logprobs give. The calls that must come back at k are those
whose JSON object closed within those bytes; the one being written must not, and the tool
format must never reach the client as text. The same conversation renders to the same prompt
in chat, Responses and Messages, so one oracle serves all three.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import anthropic
import httpx
import openai
import pytest

PARAMETERS = {"type": "object", "properties": {"city": {"enum": ["Rome", "Oslo", "Lima"]}},
              "required": ["city"], "additionalProperties": False}
CHAT_TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": PARAMETERS}}]
RESPONSES_TOOLS = [{"type": "function", "name": "weather", "parameters": PARAMETERS}]
MESSAGES_TOOLS = [{"name": "weather", "input_schema": PARAMETERS}]
# Greedy on the tiny model, some of these call twice or more; the fixture takes the first.
QUESTIONS = ["Weather?", "What is the weather in Lima, Rome and Oslo today?", "Rome and Oslo, please.",
             "Weather in every city?"]
GREEDY = {"temperature": 0}  # this anthropic client sends it only as an extra
HEAD = '{"tool_calls": ['  # the generic tool format (server/structured/tools.py)


@dataclass
class FullReply:
    question: str
    calls: list[tuple[str, dict]]  # (name, arguments) in order
    tokens: list[bytes]  # each generated token's bytes

    def complete(self, k: int) -> int:
        """How many calls closed within the first k tokens."""
        text = b"".join(self.tokens[:k]).decode("utf-8", "replace")
        end, count = len(HEAD), 0
        for name, arguments in self.calls:
            end += len(json.dumps({"name": name, "arguments": arguments}, separators=(", ", ": ")))
            count += end <= len(text)
            end += len(", ")
        return count

    def cuts(self) -> list[int]:
        """Token counts around each call's end, and the ends of the reply."""
        points = {1, 2, len(self.tokens) - 1}
        for n in range(1, len(self.calls) + 1):
            first = next(k for k in range(len(self.tokens) + 1) if self.complete(k) >= n)
            points |= {first - 1, first, first + 1}
        return sorted(k for k in points if 0 < k < len(self.tokens))


@pytest.fixture(scope="module")
def client(tiny_server):
    return tiny_server.client()


@pytest.fixture(scope="module")
def messages_client(tiny_server):
    return anthropic.Anthropic(base_url=tiny_server.url, api_key="unused", max_retries=0)


def _chat(server, client, question, **kwargs):
    return client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": question}],
                                          tools=CHAT_TOOLS, temperature=0, **kwargs)


def _calls(tool_calls) -> list[tuple[str, dict]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in tool_calls or []]


@pytest.fixture(scope="module")
def parallel(tiny_server, client) -> FullReply:
    for question in QUESTIONS:
        reply = _chat(tiny_server, client, question, tool_choice="required", max_tokens=300, logprobs=True)
        choice = reply.choices[0]
        if choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) >= 2:
            return FullReply(question, _calls(choice.message.tool_calls),
                             [bytes(t.bytes) for t in choice.logprobs.content])
    pytest.fail("no question gave two calls; the tiny model changed")


def test_chat_cut_keeps_the_complete_calls_and_never_the_format(tiny_server, client, parallel):
    for k in parallel.cuts():
        reply = _chat(tiny_server, client, parallel.question, tool_choice="required", max_tokens=k, logprobs=True)
        choice = reply.choices[0]
        assert [bytes(t.bytes) for t in choice.logprobs.content] == parallel.tokens[:k]  # the oracle holds
        assert choice.finish_reason == "length" and choice.message.content is None, k
        assert _calls(choice.message.tool_calls) == parallel.calls[:parallel.complete(k)], k


def test_chat_stream_cut_sends_the_complete_calls_in_chunks_without_null_keys(tiny_server, parallel):
    k = parallel.cuts()[-1]
    body = {"model": tiny_server.model, "messages": [{"role": "user", "content": parallel.question}],
            "tools": CHAT_TOOLS, "tool_choice": "required", "max_tokens": k, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{tiny_server.base_url}/chat/completions", json=body, timeout=60) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    for delta in deltas:  # a key is sent only with a value, as OpenAI's chunks do
        assert None not in delta.values(), delta
    assert deltas[0] == {"role": "assistant", "content": ""} and deltas[-1] == {}
    assert all("role" not in d for d in deltas[1:])
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "length" and set(finish[:-1]) == {None}
    calls: dict[int, dict] = {}
    for delta in deltas:
        for part in delta.get("tool_calls", []):
            call = calls.setdefault(part["index"], {"name": "", "arguments": ""})
            call["name"] += part.get("function", {}).get("name", "")
            call["arguments"] += part["function"]["arguments"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == \
        parallel.calls[:parallel.complete(k)]
    assert not any(d.get("content") for d in deltas)


def test_chat_stream_helper_accumulates_a_cut_reply(tiny_server, client, parallel):
    """The SDK's stream helper raises on "length" with tools given, as it does against OpenAI,
    carrying the completion it accumulated."""
    k = parallel.cuts()[-1]
    with pytest.raises(openai.LengthFinishReasonError) as cut:
        with client.chat.completions.stream(model=tiny_server.model, tools=CHAT_TOOLS, tool_choice="required",
                                            messages=[{"role": "user", "content": parallel.question}],
                                            max_tokens=k, temperature=0) as stream:
            stream.get_final_completion()
    final = cut.value.completion.choices[0]
    assert final.finish_reason == "length" and not final.message.content
    assert _calls(final.message.tool_calls) == parallel.calls[:parallel.complete(k)]


def test_plain_chat_stream_chunks_carry_only_the_keys_they_set(tiny_server):
    body = {"model": tiny_server.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "n": 2,
            "stream": True, "logprobs": True}
    with httpx.stream("POST", f"{tiny_server.base_url}/chat/completions", json=body, timeout=60) as response:
        chunks = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines()
                  if line.startswith("data: {")]
    for index in (0, 1):
        choices = [c for chunk in chunks for c in chunk["choices"] if c["index"] == index]
        deltas = [c["delta"] for c in choices]
        assert deltas[0] == {"role": "assistant", "content": ""} and deltas[-1] == {}
        assert all(set(d) == {"content"} and isinstance(d["content"], str) for d in deltas[1:-1])
        assert choices[-1]["finish_reason"] == "length"


def test_named_choice_and_one_call_rules_give_exactly_one_call(tiny_server, client, parallel):
    named = {"type": "function", "function": {"name": "weather"}}
    for kwargs in ({"tool_choice": named}, {"tool_choice": "required", "parallel_tool_calls": False}):
        choice = _chat(tiny_server, client, parallel.question, max_tokens=300, **kwargs).choices[0]
        assert choice.finish_reason == "tool_calls"
        assert _calls(choice.message.tool_calls) == parallel.calls[:1]  # the grammar ends after it
    reply = client.responses.create(model=tiny_server.model, input=parallel.question, tools=RESPONSES_TOOLS,
                                    tool_choice={"type": "function", "name": "weather"}, temperature=0,
                                    max_output_tokens=300)
    assert [(o.name, json.loads(o.arguments)) for o in reply.output] == parallel.calls[:1]


def test_responses_cut_is_incomplete_with_the_complete_calls(tiny_server, client, parallel):
    for k in parallel.cuts():
        reply = client.responses.create(model=tiny_server.model, input=parallel.question, tools=RESPONSES_TOOLS,
                                        tool_choice="required", max_output_tokens=k, temperature=0)
        assert reply.status == "incomplete" and reply.incomplete_details.reason == "max_output_tokens"
        assert all(o.type == "function_call" and o.status == "completed" for o in reply.output), k
        assert [(o.name, json.loads(o.arguments)) for o in reply.output] == parallel.calls[:parallel.complete(k)]


def _incomplete(stream):
    """The response of the stream helper's closing event. A cut stream ends, as OpenAI's does,
    with response.incomplete, which this SDK's get_final_response() does not take as final
    (it raises; openai-python PR #3538), so the event's own typed response is read."""
    final = [event.response for event in stream if event.type == "response.incomplete"]
    assert len(final) == 1
    return final[0]


def test_responses_stream_helper_reads_a_cut_reply(tiny_server, client, parallel):
    k = parallel.cuts()[-1]
    with client.responses.stream(model=tiny_server.model, input=parallel.question, tools=RESPONSES_TOOLS,
                                 tool_choice="required", max_output_tokens=k, temperature=0) as stream:
        final = _incomplete(stream)
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert [(o.name, json.loads(o.arguments)) for o in final.output] == parallel.calls[:parallel.complete(k)]
    # a cut text reply: the message item is incomplete too, streamed and stored
    with client.responses.stream(model=tiny_server.model, input="Say something.", max_output_tokens=3) as stream:
        events = list(stream)
    final = next(e.response for e in events if e.type == "response.incomplete")
    assert [e.item.status for e in events if e.type == "response.output_item.done"] == ["incomplete"]
    assert [o.status for o in final.output] == ["incomplete"]
    assert client.responses.retrieve(final.id).output[0].status == "incomplete"
    whole = client.responses.create(model=tiny_server.model, input="Say something.", max_output_tokens=3)
    assert whole.status == "incomplete" and [o.status for o in whole.output] == ["incomplete"]


def test_messages_cut_stops_at_max_tokens_with_the_complete_calls(tiny_server, messages_client, parallel):
    def calls(message):
        assert all(b.type == "tool_use" for b in message.content)
        return [(b.name, b.input) for b in message.content]

    for k in parallel.cuts():
        message = messages_client.messages.create(
            model=tiny_server.model, max_tokens=k, extra_body=GREEDY, tools=MESSAGES_TOOLS, tool_choice={"type": "any"},
            messages=[{"role": "user", "content": parallel.question}])
        assert message.stop_reason == "max_tokens"
        assert calls(message) == parallel.calls[:parallel.complete(k)], k
    for k in (1, parallel.cuts()[-1]):  # cut inside the first call (no block), and after calls
        with messages_client.messages.stream(
                model=tiny_server.model, max_tokens=k, extra_body=GREEDY, tools=MESSAGES_TOOLS,
                tool_choice={"type": "any"}, messages=[{"role": "user", "content": parallel.question}]) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "max_tokens" and calls(final) == parallel.calls[:parallel.complete(k)]
    named = messages_client.messages.create(
        model=tiny_server.model, max_tokens=300, extra_body=GREEDY, tools=MESSAGES_TOOLS,
        tool_choice={"type": "tool", "name": "weather"}, messages=[{"role": "user", "content": parallel.question}])
    assert named.stop_reason == "tool_use" and calls(named) == parallel.calls[:1]


def test_a_custom_tool_type_is_read_not_reported(tiny_server, messages_client):
    raw = messages_client.messages.with_raw_response.create(
        model=tiny_server.model, max_tokens=4, tools=[{"type": "custom", **MESSAGES_TOOLS[0]}],
        tool_choice={"type": "any", "extra": 1}, messages=[{"role": "user", "content": "Weather?"}])
    assert raw.headers["x-ignored-fields"] == "tool_choice.extra"
    with pytest.raises(anthropic.BadRequestError):  # a server tool is not served
        messages_client.messages.create(model=tiny_server.model, max_tokens=4,
                                        tools=[{"type": "web_search_20250305", "name": "web_search"}],
                                        messages=[{"role": "user", "content": "Weather?"}])


def test_langchain_bind_tools_and_structured_output_under_a_small_limit(tiny_server, parallel):
    from typing import Literal

    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, ConfigDict

    def model(max_tokens: int) -> ChatOpenAI:
        return ChatOpenAI(base_url=tiny_server.base_url, api_key="unused", model=tiny_server.model,
                          max_tokens=max_tokens, temperature=0, max_retries=0)

    k = parallel.cuts()[-1]
    message = model(k).bind_tools(CHAT_TOOLS, tool_choice="required").invoke(parallel.question)
    assert message.response_metadata["finish_reason"] == "length" and message.content == ""
    assert [(c["name"], c["args"]) for c in message.tool_calls] == parallel.calls[:parallel.complete(k)]
    assert message.invalid_tool_calls == []

    class Weather(BaseModel):
        model_config = ConfigDict(extra="forbid")  # else the random model adds properties until the limit
        city: Literal["Rome", "Oslo", "Lima"]

    whole = model(300).with_structured_output(Weather, method="function_calling", include_raw=True).invoke("Weather?")
    assert isinstance(whole["parsed"], Weather) and len(whole["raw"].tool_calls) == 1, whole
    cut = model(3).with_structured_output(Weather, method="function_calling", include_raw=True).invoke("Weather?")
    assert cut["parsed"] is None and cut["parsing_error"] is None
    assert cut["raw"].tool_calls == [] and cut["raw"].content == ""

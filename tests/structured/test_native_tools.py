"""The Hermes / Qwen tool format (`<tool_call>{json}</tool_call>`), for models whose chat
template documents it: the parser on fixed strings, the grammar on fixed strings, and a live
server on a tiny random-weight model carrying a Qwen2-style template, through OpenAI chat and
Anthropic Messages. A random model writes nonsense, so only the grammar makes its calls valid:
every call it makes must validate against its tool's schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anthropic
import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from live_server import start_server, with_template  # noqa: E402

from promptcache.server.chat import ChatRenderer, Turn  # noqa: E402
from promptcache.server.settings import ServerSettings  # noqa: E402
from promptcache.server.structured import native  # noqa: E402
from promptcache.server.structured.tools import Tool, ToolCall, ToolChoice  # noqa: E402

# Qwen2.5's tool template, reduced to what matters here: the tools in the system turn, calls as
# <tool_call> blocks, tool results wrapped in <tool_response> inside a user turn.
QWEN2_TOOLS = r"""{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n<tools>" }}
{%- for tool in tools %}{{- "\n" }}{{- tool | tojson }}{%- endfor %}
{{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- elif messages[0].role == 'system' %}{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or message.role == 'assistant' %}
{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"""

UNITS = {"type": "object", "properties": {"unit": {"enum": ["c", "f"]}, "days": {"type": "integer", "minimum": 1,
                                                                               "maximum": 7}},
         "required": ["unit", "days"], "additionalProperties": False}
CITY = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"],
        "additionalProperties": False}
TOOLS = [Tool("forecast", "The forecast", UNITS), Tool("local_time", "The time", CITY)]
OPENAI_TOOLS = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                  "parameters": t.parameters}} for t in TOOLS]
QUESTION = [{"role": "user", "content": "Will it rain in Paris this week?"}]


def test_the_parser_reads_calls_and_the_text_around_them():
    text = ('Let me check.\n<tool_call>\n{"name": "forecast", "arguments": {"unit": "c", "days": 3}}\n</tool_call>\n'
            '<tool_call>{"name": "local_time", "arguments": {"city": "Rome"}}</tool_call>')
    calls, content = native.parse_reply(text)
    assert calls == [ToolCall("forecast", {"unit": "c", "days": 3}), ToolCall("local_time", {"city": "Rome"})]
    assert content == "Let me check."
    assert native.parse_reply("Just prose.") == ([], "Just prose.")
    # A block that is not a JSON call stays text; a call cut by max_tokens is not a call.
    broken = '<tool_call>\n{"name": "forecast", "argu'
    assert native.parse_reply(broken) == ([], broken)
    assert native.parse_reply("<tool_call>not json</tool_call>") == ([], "<tool_call>not json</tool_call>")
    # Rendered back, a call is the text the grammar makes the model write.
    one = native.assistant_text([ToolCall("forecast", {"unit": "c", "days": 3})], None)
    assert one == '<tool_call>\n{"name": "forecast", "arguments": {"unit": "c", "days": 3}}\n</tool_call>'
    assert native.parse_reply(one) == ([ToolCall("forecast", {"unit": "c", "days": 3})], None)


@pytest.mark.parametrize("mode, name, parallel, text, ok", [
    ("auto", None, True, "It will rain.", True),
    ("auto", None, True, "Sure <tool_call>\n{}", False),  # a call is never free text
    ("auto", None, True, native.assistant_text([ToolCall("forecast", {"unit": "c", "days": 3})], None), True),
    ("auto", None, True, native.assistant_text([ToolCall("forecast", {"unit": "k", "days": 3})], None), False),
    ("auto", None, False, native.assistant_text([ToolCall("forecast", {"unit": "c", "days": 2}),
                                                 ToolCall("local_time", {"city": "Rome"})], None), False),
    ("required", None, True, "It will rain.", False),
    ("required", None, True, native.assistant_text([ToolCall("forecast", {"unit": "k", "days": 3})], None), False),
    ("required", None, True, native.assistant_text([ToolCall("forecast", {"unit": "c", "days": 9})], None), False),
    ("required", None, True, native.assistant_text([ToolCall("forecast", {"unit": "c", "days": 2}),
                                                    ToolCall("local_time", {"city": "Rome"})], None), True),
    ("required", None, False, native.assistant_text([ToolCall("forecast", {"unit": "c", "days": 2}),
                                                     ToolCall("local_time", {"city": "Rome"})], None), False),
    ("named", "local_time", True, native.assistant_text([ToolCall("forecast", {"unit": "c", "days": 2})], None), False),
    ("named", "local_time", True, native.assistant_text([ToolCall("local_time", {"city": "Paris"})], None), True),
])
def test_the_grammar_holds_calls_to_their_schemas_and_the_choice(accepts, mode, name, parallel, text, ok):
    spec = native.grammar(TOOLS, ToolChoice(mode, name, parallel))
    assert accepts(spec, text) is ok
    assert native.grammar(TOOLS, ToolChoice("none")) is None


@pytest.fixture(scope="module")
def qwen_server(tiny_llama_dir, tmp_path_factory):
    directory = with_template(tiny_llama_dir, tmp_path_factory.mktemp("qwen2-tools"), QWEN2_TOOLS)
    server = start_server(ServerSettings(model=str(directory), default_max_tokens=48))
    yield server
    server.stop()


def _chat(server, **kw):
    return server.client().chat.completions.create(model=server.model, messages=QUESTION, tools=OPENAI_TOOLS,
                                                   temperature=0, **kw)


@pytest.mark.parametrize("choice, names", [
    ("required", {"forecast", "local_time"}),
    ({"type": "function", "function": {"name": "local_time"}}, {"local_time"}),
])
def test_forced_calls_on_a_random_model_follow_the_schemas(qwen_server, choice, names):
    reply = _chat(qwen_server, tool_choice=choice, parallel_tool_calls=False)
    (call,) = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls" and call.function.name in names
    schema = next(t.parameters for t in TOOLS if t.name == call.function.name)
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_auto_and_none_on_a_random_model(qwen_server):
    # Greedy, this random model writes text here, never spelling <tool_call> (the grammar keeps
    # it out of text); the calls auto lets through are held to their schemas by the same grammar,
    # checked on fixed strings above.
    auto = _chat(qwen_server, max_tokens=24).choices[0]
    assert auto.message.tool_calls is None and auto.finish_reason == "length"
    assert auto.message.content and "<tool_call>" not in auto.message.content
    none = _chat(qwen_server, tool_choice="none", max_tokens=8).choices[0]
    assert none.message.tool_calls is None and none.finish_reason in ("stop", "length")


def test_the_template_renders_the_tools_and_a_round_trip_extends_the_call(qwen_server):
    server = qwen_server
    reply = _chat(server, tool_choice="required", parallel_tool_calls=False)
    message = reply.choices[0].message
    call = message.tool_calls[0]
    turn2 = [*QUESTION, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
             {"role": "tool", "tool_call_id": call.id, "content": "light rain"}]
    again = server.client().chat.completions.create(model=server.model, messages=turn2, tools=OPENAI_TOOLS,
                                                    temperature=0, max_tokens=2)
    renderer = ChatRenderer(server.engine.tokenizer)
    first = renderer.render([Turn("user", QUESTION[0]["content"])], OPENAI_TOOLS)
    assert '"name": "forecast"' in first.text and "<tools>" in first.text  # the template rendered them
    assert reply.usage.prompt_tokens == len(first.tokens)
    written = native.assistant_text([ToolCall(call.function.name, json.loads(call.function.arguments))], None)
    assert reply.usage.completion_tokens == len(server.engine.tokenizer.encode(written, add_special_tokens=False))
    assert again.usage.prompt_tokens_details.cached_tokens >= len(first.tokens) // 16 * 16


def test_anthropic_tool_use_blocks_in_the_native_format(qwen_server):
    client = anthropic.Anthropic(base_url=qwen_server.url, api_key="unused", max_retries=0)
    tools = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in TOOLS]
    reply = client.messages.create(model=qwen_server.model, max_tokens=48, tools=tools, messages=QUESTION,
                                   tool_choice={"type": "tool", "name": "forecast", "disable_parallel_tool_use": True},
                                   extra_body={"temperature": 0})
    assert reply.stop_reason == "tool_use"
    (block,) = [b for b in reply.content if b.type == "tool_use"]
    assert block.name == "forecast"
    jsonschema.validate(block.input, UNITS)


def test_text_beside_calls_in_an_assistant_turn_is_kept_in_both_formats():
    from promptcache.server.structured.openai_chat import ChatStructure, prompt_turns
    from promptcache.server.structured.tools import ToolMessage

    turn = ToolMessage("assistant", "Checking.", (ToolCall("forecast", {"unit": "c", "days": 1}),))
    for structure in (ChatStructure(tools=TOOLS, calls_allowed=True), ChatStructure(tools=TOOLS, calls_allowed=True,
                                                                                     native=True)):
        (rendered,) = [t for t in prompt_turns([turn], structure) if t.role == "assistant"]
        assert rendered.content.startswith("Checking.\n") and '"forecast"' in rendered.content

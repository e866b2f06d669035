"""OpenAI chat's structured fields -> one output constraint and a prompt; replies -> messages.

`response_format`, vLLM's `structured_outputs`, and `tools` with `tool_choice` and
`parallel_tool_calls` are each honoured or refused: a request asking for two constraints at
once, a named tool that is not listed, or a `tool_choice` other than the four OpenAI defines
is a 400 naming the field.

Tools use the model's own format where its chat template documents Hermes / Qwen
`<tool_call>` blocks (native.py: the template renders the tool list), and the generic format
otherwise (tools.py: the tool list joins the system turn). Either way earlier calls and results
are rendered back as the model generated them, the grammar constrains each call's arguments to
its tool's schema, and the reply is parsed into `tool_calls` (finish_reason "tool_calls") or
content. The Anthropic and Responses dialects build the same structure from their own fields
(`ToolMessage` turns), so one conversation renders to the same tokens in every dialect.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from promptcache.engine.api import EngineInputError
from promptcache.engine.structured.spec import StructureSpec
from promptcache.server.chat import Turn
from promptcache.server.structured import native
from promptcache.server.structured import tools as generic
from promptcache.server.structured.formats import from_response_format, from_structured_outputs, one_spec
from promptcache.server.structured.unread import choice_unread, format_unread, tools_unread


@dataclass(frozen=True)
class ChatStructure:
    spec: StructureSpec | None = None
    tools: list[generic.Tool] = field(default_factory=list)
    calls_allowed: bool = False  # the reply is in a tool format and may hold calls
    native: bool = False  # the template's own (Hermes / Qwen) format, not the generic one
    ignored: tuple[str, ...] = ()  # keys of the free-form fields nothing reads (unread.py), to name

    @property
    def uses_tools(self) -> bool:
        return bool(self.tools)

    @property
    def template_tools(self) -> list[dict] | None:
        """The tools the chat template renders itself (native format only)."""
        return native.template_tools(self.tools) if self.native and self.tools else None


def tool_of(entry: Any, index: int) -> generic.Tool:
    param = f"tools[{index}]"
    if not isinstance(entry, dict) or entry.get("type", "function") != "function":
        raise EngineInputError(f"{param} must be a function tool", "tools")
    fn = entry.get("function", entry)  # chat nests the function; the Responses API does not
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise EngineInputError(f"{param}.function.name is required", "tools")
    parameters = fn.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise EngineInputError(f"{param}.function.parameters must be a JSON Schema object", "tools")
    return generic.Tool(fn["name"], str(fn.get("description") or ""), parameters, bool(fn.get("strict")))


def choice_of(value: Any, parallel: bool | None) -> generic.ToolChoice:
    parallel = True if parallel is None else bool(parallel)
    if value is None or value in ("auto", "required", "none"):
        return generic.ToolChoice(value or "auto", parallel=parallel)
    if isinstance(value, dict) and value.get("type") == "function":
        name = (value.get("function") or value).get("name")
        if isinstance(name, str):
            return generic.ToolChoice("named", name, parallel=parallel)
    raise EngineInputError("tool_choice must be 'auto', 'required', 'none' or a named function", "tool_choice")


def chat_structure(response_format: Any = None, structured_outputs: Any = None, tools: Any = None,
                   tool_choice: Any = None, parallel_tool_calls: bool | None = None,
                   native_format: bool = False) -> ChatStructure:
    if tools is not None and not isinstance(tools, list):
        raise EngineInputError("tools must be a list", "tools")
    tool_list = [tool_of(t, i) for i, t in enumerate(tools or [])]
    choice = choice_of(tool_choice, parallel_tool_calls) if tool_list else None
    structure = tool_structure(tool_list, choice, response_format, structured_outputs, native_format, tool_choice)
    ignored = tools_unread(tools) + choice_unread(tool_choice) + format_unread(response_format)
    return replace(structure, ignored=tuple(ignored))


def tool_structure(tool_list: list[generic.Tool], choice: generic.ToolChoice | None, response_format: Any = None,
                   structured_outputs: Any = None, native_format: bool = False,
                   tool_choice: Any = None, output: StructureSpec | None = None) -> ChatStructure:
    """The structure for parsed tools and choice, in any dialect (`output`: a dialect's own
    output-format field, already read)."""
    if len({t.name for t in tool_list}) != len(tool_list):
        raise EngineInputError("tools lists a function name twice", "tools")
    output = one_spec(output, from_response_format(response_format), from_structured_outputs(structured_outputs))
    if not tool_list or choice is None:
        if tool_choice not in (None, "none", "auto") or (choice is not None and choice.mode not in ("none", "auto")):
            raise EngineInputError("tool_choice needs tools", "tool_choice")
        return ChatStructure(spec=output)
    generic.check_choice(tool_list, choice)
    if output is not None and choice.mode != "none":
        raise EngineInputError(f"{output.param} cannot be combined with tools unless tool_choice is 'none'",
                               output.param)
    native_format = bool(native_format)
    if output is not None:  # tools listed (so in the prompt) but not callable: the format rules
        return ChatStructure(spec=output, tools=tool_list, native=native_format)
    if native_format:
        return ChatStructure(spec=native.grammar(tool_list, choice), tools=tool_list,
                             calls_allowed=choice.mode != "none", native=True)
    return ChatStructure(spec=generic.grammar(tool_list, choice), tools=tool_list, calls_allowed=True)


def prompt_turns(messages: list[Any], structure: ChatStructure) -> list[Turn]:
    """The conversation to render: the tool list joins the system turn; earlier assistant calls
    and tool results are written as the generic format has the model write and read them."""
    turns = []
    for message in messages:
        role, text = message.role, message.text()
        calls = getattr(message, "tool_calls", None)
        if structure.native:  # the template wraps tool turns; calls are written as generated
            if role == "assistant" and calls:
                text = native.assistant_text([_call_of(c) for c in calls], text or None)
            turns.append(Turn(role, text))
            continue
        if role == "assistant" and calls:  # text a client wrote beside its calls is kept, before them
            text = "\n".join(([text] if text else []) + [generic.assistant_text([_call_of(c) for c in calls], None)])
        elif role == "assistant" and structure.calls_allowed:
            text = generic.assistant_text([], text)
        elif role == "tool":
            text = generic.tool_result_text(getattr(message, "tool_call_id", None), text,
                                            getattr(message, "is_error", False))
        turns.append(Turn(role, text))
    if structure.uses_tools and not structure.native:
        system = [t for t in turns if t.role in ("system", "developer")]
        merged = generic.system_text("\n\n".join(t.content for t in system) or None, structure.tools)
        turns = [Turn("system", merged)] + [t for t in turns if t.role not in ("system", "developer")]
    return turns


def _call_of(call: Any) -> generic.ToolCall:
    if isinstance(call, generic.ToolCall):
        return call
    fn = call.get("function", {}) if isinstance(call, dict) else {}
    name, arguments = fn.get("name"), fn.get("arguments", "{}")
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError as exc:
        raise EngineInputError("an assistant tool call's arguments are not valid JSON", "messages") from exc
    if not isinstance(name, str) or not isinstance(parsed, dict):
        raise EngineInputError("an assistant tool call needs a function name and an arguments object", "messages")
    return generic.ToolCall(name, parsed)


def reply_message(text: str, structure: ChatStructure, finish_reason: str) -> tuple[str | None, list[dict], str]:
    """(content, OpenAI tool_calls, finish_reason) for a finished reply. Cut by max_tokens, it
    keeps the calls it completed and says "length", as OpenAI does."""
    calls, answer = reply_calls(text, structure, finish_reason)
    if not calls:
        return answer, [], finish_reason
    tool_calls = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                   "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                  for c in calls]
    return None, tool_calls, "length" if finish_reason == "length" else "tool_calls"


Reply = tuple[list[generic.ToolCall], str | None]  # (calls, content)


def reply_calls(text: str, structure: ChatStructure, finish_reason: str = "stop") -> Reply:
    """(calls, content) of a finished reply, in the structure's tool format. A reply cut by
    max_tokens ("length") keeps only the calls it completed, and never shows the format as text."""
    if not structure.calls_allowed:
        return [], text
    form = native if structure.native else generic
    return (form.parse_cut if finish_reason == "length" else form.parse_reply)(text)


def plan_chat(renderer, body) -> tuple[ChatStructure, list[Turn], list[dict] | None]:
    """An OpenAI chat body's (structure, turns to render, tools for the template): the native
    tool format where the template documents one, the generic format otherwise."""
    structure = chat_structure(body.response_format, body.structured_outputs, body.tools, body.tool_choice,
                               body.parallel_tool_calls, native_format=bool(body.tools) and native_format(renderer))
    return structure, prompt_turns(body.messages, structure), structure.template_tools


def native_format(renderer) -> bool:
    """Whether the renderer's chat template documents the Hermes / Qwen tool format."""
    template = getattr(renderer.tokenizer, "chat_template", None)
    return native.available(getattr(template, "source", "") or "")

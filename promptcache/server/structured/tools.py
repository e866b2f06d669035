"""The generic tool-call format, for models whose chat template has none (SmolLM2 among them).

Like llama.cpp's generic format, the model is told about the tools in the system turn and its
reply is constrained to JSON: either a call or an answer. The form is fixed and documented
(docs/server.md, "Structured outputs and tools"):

- The system turn gets `TOOLS_HEADER` and one line per tool, `{"name", "description",
  "parameters"}` as compact JSON, in the client's order, after the client's own system text.
  The same tool list gives the same text, hence the same tokens: it is part of the cached
  prefix, and it does not depend on `tool_choice`, so requests differing only in their choice
  share it.
- A call is `{"tool_calls": [{"name": ..., "arguments": {...}}]}`; an answer is
  `{"response": "..."}`. `tool_choice` picks which the grammar allows: `auto` either, `required`
  a call, a named tool exactly one call of that tool (OpenAI's and vLLM's answer), `none` an
  answer. `parallel_tool_calls: false` allows one call, and parallel calls are at most
  `MAX_PARALLEL_CALLS`, so a small model cannot repeat calls until max_tokens.
- A reply cut by max_tokens (`parse_cut`) keeps the calls it completed and drops the one it
  was writing; a cut answer is its text so far. The format itself never reaches the client.
- An assistant turn that called tools is rendered back exactly as it was generated, and a tool
  result as `{"tool_call_id", "content"}`, so turn 2's prompt extends what turn 1 produced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pydantic_core

from promptcache.engine.api import EngineInputError
from promptcache.engine.structured.spec import StructureSpec

TOOLS_HEADER = (
    "# Tools\n\nYou can call the tools listed below. To call tools, reply with only a JSON object "
    '{"tool_calls": [{"name": <tool name>, "arguments": <arguments object>}]}. To answer without '
    'calling a tool, reply with only {"response": <your answer as a string>}. When a tool turn has given you '
    'the result you need, answer the user with it in a response.\n\nAvailable tools, one per line:'
)
_SEPARATORS = (", ", ": ")  # the grammar's own (engine/structured/compiler.py JSON_OPTIONS)
# Calls one reply may hold with parallel calls allowed: enough for any real fan-out, and an end
# to a small model repeating one call until max_tokens.
MAX_PARALLEL_CALLS = 8
_CALLS_OPEN = '{"tool_calls": ['


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # a JSON Schema for the arguments object
    strict: bool = False


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict


@dataclass(frozen=True)
class ToolChoice:
    mode: str  # "auto" | "required" | "none" | "named"
    name: str | None = None
    parallel: bool = True


def dumps(value: Any) -> str:
    """JSON exactly as the grammar makes the model write it."""
    return json.dumps(value, separators=_SEPARATORS, ensure_ascii=False)


def system_text(client_system: str | None, tools: list[Tool]) -> str:
    lines = [dumps({"name": t.name, "description": t.description, "parameters": t.parameters}) for t in tools]
    block = TOOLS_HEADER + "\n" + "\n".join(lines)
    return f"{client_system}\n\n{block}" if client_system else block


def check_choice(tools: list[Tool], choice: ToolChoice, param: str = "tool_choice") -> None:
    if choice.mode in ("required", "named") and not tools:
        raise EngineInputError(f"{param} needs a tool, and the request lists none", param)
    if choice.mode == "named" and choice.name not in {t.name for t in tools}:
        raise EngineInputError(f"{param} names a tool that is not in tools: {choice.name!r}", param)


def grammar(tools: list[Tool], choice: ToolChoice, param: str = "tools") -> StructureSpec:
    """The reply's constraint under `choice` (check_choice first)."""
    allowed = [t for t in tools if choice.mode != "named" or t.name == choice.name]
    call = None
    if allowed:
        call = {"anyOf": [_call_schema(t) for t in allowed]} if len(allowed) > 1 else _call_schema(allowed[0])
    calls = {"type": "object", "additionalProperties": False, "required": ["tool_calls"],
             "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1,
                                           "maxItems": max_calls(choice)}}}
    answer = {"type": "object", "additionalProperties": False, "required": ["response"],
              "properties": {"response": {"type": "string"}}}
    schema = {"none": answer, "auto": {"anyOf": [calls, answer]}}.get(choice.mode, calls)
    if choice.mode == "auto" and not allowed:
        schema = answer
    strict = all(t.strict for t in allowed)
    return StructureSpec("json_schema", json.dumps(schema), strict=strict, param=param)


def max_calls(choice: ToolChoice) -> int:
    """Calls one reply may hold: one for a named tool or without parallel calls."""
    return MAX_PARALLEL_CALLS if choice.parallel and choice.mode != "named" else 1


def _call_schema(tool: Tool) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters or {"type": "object"}}}


def parse_reply(text: str) -> tuple[list[ToolCall], str | None]:
    """(calls, answer text) from a reply in the generic format. A reply that is not complete
    JSON (cut by max_tokens) comes back as its raw text, with no calls."""
    try:
        value = json.loads(text)
    except ValueError:
        return [], text
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        return [ToolCall(c["name"], c.get("arguments", {})) for c in value["tool_calls"]
                if isinstance(c, dict) and isinstance(c.get("name"), str)], None
    if isinstance(value, dict) and isinstance(value.get("response"), str):
        return [], value["response"]
    return [], text


def parse_cut(text: str) -> tuple[list[ToolCall], str | None]:
    """(complete calls, answer so far) of a reply cut by max_tokens: each call whose JSON
    object closed is kept, the one being written is dropped; a cut answer is its text so far."""
    try:
        json.loads(text)
    except ValueError:
        pass
    else:  # cut exactly at its end: complete after all
        return parse_reply(text)
    if text.startswith(_CALLS_OPEN):
        return complete_calls(text, len(_CALLS_OPEN), ", "), None
    try:
        partial = pydantic_core.from_json(text, allow_partial="trailing-strings")
    except ValueError:  # not a prefix of the format (it always is under the grammar)
        partial = None
    response = partial.get("response") if isinstance(partial, dict) else None
    return [], response if isinstance(response, str) else None


def complete_calls(text: str, at: int, separator: str | None) -> list[ToolCall]:
    """The call objects `{"name", "arguments"}` that closed in `text`, from `at` on, one after
    another with `separator` between them (None: one call at most)."""
    decoder, calls = json.JSONDecoder(), []
    while True:
        try:
            value, end = decoder.raw_decode(text, at)
        except ValueError:
            return calls
        if isinstance(value, dict) and isinstance(value.get("name"), str) \
                and isinstance(value.get("arguments", {}), dict):
            calls.append(ToolCall(value["name"], value.get("arguments", {})))
        if separator is None or not text.startswith(separator, end):
            return calls
        at = end + len(separator)


def assistant_text(calls: list[ToolCall], content: str | None) -> str:
    """An earlier assistant turn, as the model generated it under the grammar."""
    if calls:
        return dumps({"tool_calls": [{"name": c.name, "arguments": c.arguments} for c in calls]})
    return dumps({"response": content or ""})


def tool_result_text(tool_call_id: str | None, content: str, is_error: bool = False) -> str:
    """A tool turn; a result the client marks as an error (Anthropic's `is_error`) says so."""
    return dumps({"tool_call_id": tool_call_id, "content": content, **({"is_error": True} if is_error else {})})


@dataclass(frozen=True)
class ToolMessage:
    """One turn of a conversation with tools, in any dialect: what `openai_chat.prompt_turns`
    renders (an OpenAI chat message has the same attributes)."""

    role: str
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False

    def text(self) -> str:
        return self.content

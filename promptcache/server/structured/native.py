"""The Hermes / Qwen tool format, for models whose chat template documents one.

Such a template renders the tool list itself (transformers passes `tools` to it) and tells the
model to answer a call as

    <tool_call>
    {"name": <tool name>, "arguments": <arguments object>}
    </tool_call>

one block per call, separated by a newline. The reply is constrained by a Lark grammar whose
call bodies are each tool's JSON Schema (`%json`), so arguments always validate:

- `auto`: free text that never contains `<tool_call>`, or one or more calls;
- `required`: one or more calls (at most `MAX_PARALLEL_CALLS`); a named tool: exactly one call
  of that tool;
- `parallel_tool_calls: false`: one call;
- `none`: no grammar, and the reply is never parsed for calls.

Earlier calls are rendered back into the assistant turn exactly as the grammar had the model
write them (not through the template's own `tool_calls` rendering, which may space the JSON
otherwise), so a round trip's next prompt extends the previous reply token for token. A reply
cut by max_tokens keeps its complete calls and drops the one being written (`parse_cut`).
"""

from __future__ import annotations

import json
import re

from promptcache.engine.structured.spec import StructureSpec
from promptcache.server.structured.tools import Tool, ToolCall, ToolChoice, complete_calls, dumps, max_calls

OPEN, CLOSE = "<tool_call>", "</tool_call>"
# The grammar's JSON spacing, the same as the generic format's (engine/structured/compiler.py).
_JSON_STYLE = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def available(template_source: str) -> bool:
    """Whether a chat template documents this format (Hermes, Qwen 2 and later)."""
    return "tools" in template_source and OPEN in template_source


def template_tools(tools: list[Tool]) -> list[dict]:
    """The tool list as chat templates take it (OpenAI's nested function objects)."""
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}} for t in tools]


def _call_schema(tool: Tool) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters or {"type": "object"}}}


def grammar(tools: list[Tool], choice: ToolChoice, param: str = "tools") -> StructureSpec | None:
    """The reply's constraint under `choice` (check_choice first); None for `none`."""
    if choice.mode == "none" or not tools:
        return None
    allowed = [t for t in tools if choice.mode != "named" or t.name == choice.name]
    schemas = [_call_schema(t) for t in allowed]
    body = {"anyOf": schemas} if len(schemas) > 1 else schemas[0]
    body = {**body, "x-guidance": {**_JSON_STYLE, "lenient": not all(t.strict for t in allowed)}}
    more = max_calls(choice) - 1
    calls = f'call ("\\n" call){{0,{more}}}' if more else "call"
    start = "TEXT | calls" if choice.mode == "auto" else "calls"
    lines = [
        f"start: {start}",
        f"calls: {calls}",
        f'call: "{OPEN}\\n" body "\\n{CLOSE}"',
        f"body: %json {json.dumps(body)}",
    ]
    if choice.mode == "auto":
        lines.append(f"TEXT: /(?s:.+)/ & ~/(?s:.*{re.escape(OPEN)}.*)/")
    return StructureSpec("lark", "\n".join(lines) + "\n", strict=True, param=param)


def parse_reply(text: str) -> tuple[list[ToolCall], str | None]:
    """(calls, content): every complete `<tool_call>` block whose body is a JSON call, and the
    text around them (None when there is none). A reply with no valid call is all content."""
    calls, kept, last = [], [], 0
    for match in _BLOCK.finditer(text):
        try:
            value = json.loads(match.group(1))
        except ValueError:
            continue
        if not (isinstance(value, dict) and isinstance(value.get("name"), str)):
            continue
        arguments = value.get("arguments", {})
        calls.append(ToolCall(value["name"], arguments if isinstance(arguments, dict) else {}))
        kept.append(text[last:match.start()])
        last = match.end()
    if not calls:
        return [], text
    content = ("".join(kept) + text[last:]).strip()
    return calls, content or None


def parse_cut(text: str) -> tuple[list[ToolCall], str | None]:
    """(complete calls, text) of a reply cut by max_tokens. A reply of calls keeps each closed
    block, and the block being written if its call object closed; free text is its text so far."""
    if OPEN.startswith(text):  # cut inside the first call's opening tag
        return [], None
    if not text.startswith(OPEN):
        return parse_reply(text)
    calls, _ = parse_reply(text)
    tail = text.rfind(OPEN)
    if CLOSE not in text[tail:]:
        body = text[tail + len(OPEN):].lstrip()
        calls += complete_calls(body, 0, None)
    return calls, None


def assistant_text(calls: list[ToolCall], content: str | None) -> str:
    """An earlier assistant turn as the model writes it under this format."""
    blocks = [f"{OPEN}\n{dumps({'name': c.name, 'arguments': c.arguments})}\n{CLOSE}" for c in calls]
    return "\n".join(([content] if content else []) + blocks)

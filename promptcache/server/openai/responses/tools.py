"""Function tools in the Responses API: `tools` and `tool_choice` in, `function_call` output
items out, `function_call` and `function_call_output` input items rendered back.

The structure is the one every dialect uses (server/structured/): the template's own tool
format where it documents one, the generic format otherwise, with each call's arguments
constrained to its tool's schema. The stored history keeps calls and results as data
(`{"role": "assistant", "content", "tool_calls"}`, `{"role": "tool", "content",
"tool_call_id"}`), so `previous_response_id` renders them back exactly as the model wrote them
and a chain's next turn extends the previous prompt and reply token for token.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

from promptcache.engine.api import EngineInputError
from promptcache.server.openai.responses.schema import FunctionCallItem, FunctionCallOutputItem, ResponsesRequest
from promptcache.server.structured.formats import from_response_format
from promptcache.server.structured.openai_chat import (
    ChatStructure,
    choice_of,
    native_format,
    reply_calls,
    tool_of,
    tool_structure,
)
from promptcache.server.structured.tools import ToolCall, ToolMessage
from promptcache.server.structured.unread import choice_unread, text_unread, tools_unread


def tool_plan(body: ResponsesRequest, renderer) -> ChatStructure:
    """Tools, tool_choice, parallel_tool_calls and text.format as one output structure."""
    if body.tools is not None and not isinstance(body.tools, list):
        raise EngineInputError("tools must be a list", "tools")
    tools = [tool_of(t, i) for i, t in enumerate(body.tools or [])]
    choice = choice_of(body.tool_choice, body.parallel_tool_calls) if tools else None
    output = from_response_format((body.text or {}).get("format"), "text.format")
    plan = tool_structure(tools, choice, native_format=bool(tools) and native_format(renderer),
                          tool_choice=body.tool_choice, output=output)
    return replace(plan, ignored=tuple(tools_unread(body.tools) + choice_unread(body.tool_choice)
                                       + text_unread(body.text)))


def _arguments(item: FunctionCallItem) -> dict:
    try:
        value = json.loads(item.arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise EngineInputError("a function_call item's arguments must be a JSON object", "input")
    return value


def entries(body: ResponsesRequest) -> list[dict]:
    """This request's input as history entries. Consecutive function_call items (and an
    assistant message right before them) are one assistant turn, as the model wrote them."""
    out: list[dict] = []
    for item in body.items():
        if isinstance(item, FunctionCallItem):
            call = {"call_id": item.call_id, "name": item.name, "arguments": _arguments(item)}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            out.append({"role": "tool", "content": item.text(), "tool_call_id": item.call_id})
        else:
            out.append({"role": item.role, "content": item.text()})
    return out


def messages(conversation: list[dict]) -> list[ToolMessage]:
    """Stored history entries as the neutral turns `prompt_turns` renders."""
    return [ToolMessage(e["role"], e.get("content") or "",
                        tuple(ToolCall(c["name"], c["arguments"]) for c in e.get("tool_calls") or ()),
                        e.get("tool_call_id")) for e in conversation]


def reply(text: str, plan: ChatStructure, item_id: str, finish_reason: str = "stop") -> tuple[list[dict], dict, str]:
    """(output items, history entry, output text) of a finished reply. Cut by
    max_output_tokens, its message item is "incomplete"; the calls it completed are kept
    ("completed"), the one being written is dropped, and the tool format is never text."""
    calls, content = reply_calls(text, plan, finish_reason)
    status = item_status(finish_reason)
    if not calls:
        items = [] if content is None else [message_item(item_id, content, status)]
        return items, {"role": "assistant", "content": content or ""}, content or ""
    items = [message_item(item_id, content, status)] if content else []
    stored = []
    for call in calls:
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        items.append(function_call_item(call_id, call))
        stored.append({"call_id": call_id, "name": call.name, "arguments": call.arguments})
    return items, {"role": "assistant", "content": content or "", "tool_calls": stored}, content or ""


def item_status(finish_reason: str) -> str:
    """An output item's status: "incomplete" when max_output_tokens cut it, as OpenAI sends."""
    return "incomplete" if finish_reason == "length" else "completed"


def function_call_item(call_id: str, call: ToolCall, status: str = "completed") -> dict:
    return {"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call_id, "name": call.name,
            "arguments": json.dumps(call.arguments, ensure_ascii=False), "status": status}


def message_item(item_id: str, text: str, status: str = "completed") -> dict:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status != "in_progress" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}

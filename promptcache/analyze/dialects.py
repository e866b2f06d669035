"""Request bodies of each API dialect, reduced to what decides the prompt's tokens.

OpenAI chat completions, OpenAI completions, Anthropic messages and OpenAI Responses bodies
become one `LoggedPrompt`: chat messages (role, text, reasoning) plus tools, or completion text
or token ids. Reasoning is kept apart from the text because the server never renders it into a
later prompt; the lint reports where dropping it cuts a shared prefix short.

Anything that is not a recognisable body raises `BadBody` with a short reason; the reader
counts it as a bad line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class BadBody(ValueError):
    """A line that is not a request body this tool understands."""


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    reasoning: str | None = None

    def text(self) -> str:  # the interface of the server's chat messages
        return self.content


@dataclass(frozen=True)
class LoggedPrompt:
    dialect: str  # chat, completions, messages, responses
    messages: tuple[Message, ...] = ()
    tools: tuple[dict[str, Any], ...] | None = None
    text: str | None = None  # completions: prompt text
    token_ids: tuple[int, ...] | None = None  # completions: prompt token ids


_ROLES = {"system", "developer", "user", "assistant", "tool"}


def _parts_text(content: Any, where: str) -> tuple[str, str | None]:
    """(text, reasoning) of a content string or a list of content blocks of any dialect."""
    if content is None:
        return "", None
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        raise BadBody(f"{where}: content is neither a string nor a list")
    texts: list[str] = []
    thoughts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise BadBody(f"{where}: a content part is not an object")
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            texts.append(str(part.get("text", "")))
        elif kind in ("thinking", "reasoning", "redacted_thinking"):
            thoughts.append(str(part.get("thinking") or part.get("text") or part.get("data") or ""))
        elif kind == "tool_use":
            # as the server's Messages dialect renders a call (server/anthropic/translate.py)
            call = json.dumps({"name": part.get("name"), "arguments": part.get("input")}, ensure_ascii=False)
            texts.append(f"<tool_call>{call}</tool_call>")
        elif kind == "tool_result":
            texts.append(_parts_text(part.get("content"), where)[0])
        # images, files and audio are not text; the server would refuse them, analysis skips them
    return "\n".join(texts), ("\n".join(thoughts) or None)


def _message(raw: Any, where: str) -> Message:
    if not isinstance(raw, dict) or raw.get("role") not in _ROLES:
        raise BadBody(f"{where}: not a message with a known role")
    text, thoughts = _parts_text(raw.get("content"), where)
    reasoning = raw.get("reasoning_content") or raw.get("reasoning") or thoughts
    return Message(raw["role"], text, reasoning if isinstance(reasoning, str) and reasoning else None)


def _function_tools(tools: Any) -> tuple[dict[str, Any], ...] | None:
    """Tools in OpenAI chat's shape (what chat templates expect), whatever the dialect."""
    if not tools:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise BadBody("tools is not a list of objects")
    out = []
    for tool in tools:
        if "function" in tool:
            out.append(tool)
        else:  # Anthropic {name, description, input_schema}; Responses {type, name, parameters}
            out.append({"type": "function", "function": {
                "name": tool.get("name"), "description": tool.get("description", ""),
                "parameters": tool.get("input_schema", tool.get("parameters", {}))}})
    return tuple(out)


def chat(body: dict) -> LoggedPrompt:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadBody("messages is not a non-empty list")
    return LoggedPrompt("chat", tuple(_message(m, f"message {i}") for i, m in enumerate(messages)),
                        _function_tools(body.get("tools")))


def anthropic_messages(body: dict) -> LoggedPrompt:
    system, _ = _parts_text(body.get("system"), "system")
    head = (Message("system", system),) if system else ()
    return LoggedPrompt("messages", head + chat(body).messages, _function_tools(body.get("tools")))


def completions(body: dict) -> LoggedPrompt:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return LoggedPrompt("completions", text=prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and 0 <= t < 2**32 for t in prompt):
        return LoggedPrompt("completions", token_ids=tuple(prompt))
    raise BadBody("prompt is neither a string nor a list of token ids")


def responses(body: dict) -> LoggedPrompt:
    """Responses: `instructions` then `input` (a string, or items: messages, reasoning, calls)."""
    head = [Message("system", body["instructions"])] if isinstance(body.get("instructions"), str) else []
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise BadBody("input is neither a string nor a non-empty list")
    messages: list[Message] = []
    pending_reasoning: list[str] = []
    for i, item in enumerate(items):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message":
            message = _message(item, f"input {i}")
            if message.role == "assistant" and pending_reasoning:
                message = Message("assistant", message.content, "\n".join(pending_reasoning))
                pending_reasoning = []
            messages.append(message)
        elif kind == "reasoning":
            pending_reasoning.append(" ".join(str(s.get("text", "")) for s in item.get("summary") or [] if isinstance(s, dict)))
        elif kind == "function_call":
            messages.append(Message("assistant", json.dumps({"name": item.get("name"), "arguments": item.get("arguments")})))
        elif kind == "function_call_output":
            messages.append(Message("tool", str(item.get("output", ""))))
        else:
            raise BadBody(f"input {i}: unknown item")
    return LoggedPrompt("responses", tuple(head + messages), _function_tools(body.get("tools")))


def parse_body(body: Any, endpoint: str | None = None) -> LoggedPrompt:
    """The prompt of one body; `endpoint` (a logged path) settles the dialect when given."""
    if not isinstance(body, dict):
        raise BadBody("the body is not a JSON object")
    path = endpoint or ""
    if path.endswith("/messages") or (path == "" and "messages" in body and ("system" in body or "anthropic_version" in body)):
        return anthropic_messages(body)
    if path.endswith("/responses") or (path == "" and "input" in body):
        return responses(body)
    if path.endswith("/chat/completions") or (path == "" and "messages" in body):
        return chat(body)
    if path.endswith("/completions") or (path == "" and "prompt" in body):
        return completions(body)
    raise BadBody("not a chat, completions, messages or responses body")

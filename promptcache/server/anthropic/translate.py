"""A Messages request -> the neutral spec: conversation turns, the rendered prompt, sampling,
and the token positions of its `cache_control` breakpoints.

A breakpoint's position is found by rendering the conversation cut right after the marked
block (no assistant header) and taking the length of the token prefix it shares with the full
prompt: the same template, so the same tokens up to that point. At most four extra renders,
each linear in the conversation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from promptcache.server.chat import ChatPrompt, ChatRenderer, Turn
from promptcache.server.core.spec import CacheSpec, SamplingSpec
from promptcache.server.errors import bad_request
from promptcache.server.anthropic.schema import (
    MAX_BREAKPOINTS,
    TTL_SECONDS,
    CountTokensRequest,
    MessagesRequest,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)


@dataclass(frozen=True)
class Breakpoint:
    turns: tuple[Turn, ...]  # the conversation cut right after the marked block
    tools: int  # how many tools precede it (all of them past the tools list)
    ttl: str


def _joined(blocks) -> str:
    return "\n".join(b.text for b in blocks)


def _check_tools(body: CountTokensRequest, renderer: ChatRenderer) -> None:
    """Tool definitions and tool blocks need a template that renders them; otherwise they
    would vanish from the prompt, so the request is refused, naming the field."""
    if body.tools:
        renderer.require_tool_format("tools")
    for i, message in enumerate(body.messages):
        for j, block in enumerate(message.blocks()):
            if isinstance(block, (ToolUseBlock, ToolResultBlock)):
                renderer.require_tool_format(f"messages.{i}.content.{j}", f"{block.type} blocks")


def conversation(body: CountTokensRequest, renderer: ChatRenderer) -> tuple[list[Turn], list[Breakpoint]]:
    """The turns to render and the breakpoints, in prompt order (tools, system, messages)."""
    _check_tools(body, renderer)
    system = [TextBlock(type="text", text=body.system)] if isinstance(body.system, str) else list(body.system or [])
    turns = [Turn("system", _joined(system))] if system else []
    marks: list[Breakpoint] = []
    n_tools = len(body.tools or [])
    for i, tool in enumerate(body.tools or []):
        if tool.cache_control is not None:
            marks.append(Breakpoint(tuple(turns[:1]) if system else (), i + 1, tool.cache_control.ttl))
    for j, block in enumerate(system):
        if block.cache_control is not None:
            marks.append(Breakpoint((Turn("system", _joined(system[: j + 1])),), n_tools, block.cache_control.ttl))
    for message in body.messages:
        blocks = message.blocks()
        for j, block in enumerate(blocks):
            if block.cache_control is not None:
                cut = Turn(message.role, _block_text(blocks[: j + 1]))
                marks.append(Breakpoint((*turns, cut), n_tools, block.cache_control.ttl))
        turns.append(Turn(message.role, _block_text(blocks)))
    if body.cache_control is not None:
        marks.append(Breakpoint(tuple(turns), n_tools, body.cache_control.ttl))
    if len(marks) > MAX_BREAKPOINTS:
        raise bad_request(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
                          f"Found {len(marks)}.", param="cache_control")
    ttls = [m.ttl for m in marks]
    if "5m" in ttls and "1h" in ttls[ttls.index("5m"):]:
        raise bad_request("a cache_control with ttl '1h' must not come after one with ttl '5m'.",
                          param="cache_control")
    return turns, marks


def _block_text(blocks) -> str:
    """Text blocks joined by newlines; tool blocks (only with a tool format) as their text."""
    parts = []
    for block in blocks:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ToolResultBlock):
            parts.append(block.text())
        else:
            call = json.dumps({"name": block.name, "arguments": block.input}, ensure_ascii=False)
            parts.append(f"<tool_call>{call}</tool_call>")
    return "\n".join(parts)


def tool_dicts(body: CountTokensRequest) -> list[dict] | None:
    """Anthropic tools as the OpenAI-style function dicts chat templates expect."""
    if not body.tools:
        return None
    return [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.input_schema}} for t in body.tools]


def render(body: CountTokensRequest, renderer: ChatRenderer) -> tuple[ChatPrompt, tuple[tuple[int, str], ...]]:
    """The prompt and its breakpoints as (token position, TTL label), in order. Runs in a worker
    thread: it renders and tokenizes."""
    turns, marks = conversation(body, renderer)
    tools = tool_dicts(body)
    prompt = renderer.render(turns, tools)
    points = []
    for mark in marks:
        prefix = renderer.render_prefix(mark.turns, tools[: mark.tools] if tools else None) if mark.turns else []
        points.append((_shared(prefix, prompt.tokens), mark.ttl))
    return prompt, tuple(sorted(points))


def _shared(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def sampling_spec(body: MessagesRequest) -> SamplingSpec:
    return SamplingSpec(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                        top_k=body.top_k, stop=tuple(body.stop_sequences or ()))


def cache_spec(body: MessagesRequest, breakpoints: tuple[tuple[int, str], ...]) -> CacheSpec:
    """A breakpoint keeps the prefix up to it for its TTL: the request's inserts (and the
    touches of blocks it hits, which extend their expiry) get the longest TTL it names."""
    ttl = max((TTL_SECONDS[label] for _, label in breakpoints), default=None)
    return CacheSpec(ttl_s=ttl, end_user=body.metadata.user_id if body.metadata else None,
                     breakpoints=breakpoints)

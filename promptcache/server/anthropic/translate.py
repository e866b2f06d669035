"""A Messages request -> the neutral spec: conversation turns, the rendered prompt, sampling,
and the token positions of its `cache_control` breakpoints.

A breakpoint's position is found by rendering the conversation cut right after the marked
block (no assistant header) and taking the length of the token prefix it shares with the full
prompt: the same template, so the same tokens up to that point. At most four extra renders,
each linear in the conversation.

Tools, `tool_use` and `tool_result` blocks become the neutral turns every dialect renders
(server/structured/): with the template's own tool format where it has one, the generic format
otherwise, so a tool round trip's next prompt extends exactly what the model generated, and the
same conversation sent as OpenAI chat renders to the same tokens.

Structured outputs (`output_config.format`, or the beta's `output_format`) become the same
`StructureSpec` OpenAI's `response_format` json_schema does, held by the same decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from promptcache.engine.api import EngineInputError
from promptcache.server.chat import ChatPrompt, ChatRenderer
from promptcache.server.core.spec import CacheSpec, SamplingSpec
from promptcache.engine.structured.spec import StructureSpec
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
from promptcache.server.structured.formats import from_json_output_format, one_spec
from promptcache.server.structured.openai_chat import ChatStructure, native_format, prompt_turns, tool_structure
from promptcache.server.structured.tools import Tool, ToolCall, ToolChoice, ToolMessage
from promptcache.server.structured.unread import unread


@dataclass(frozen=True)
class Breakpoint:
    messages: tuple[ToolMessage, ...]  # the conversation cut right after the marked block
    tools: int  # how many tools precede it (all of them past the tools list)
    ttl: str


def _joined(blocks) -> str:
    return "\n".join(b.text for b in blocks)


def tool_plan(body: CountTokensRequest, renderer: ChatRenderer) -> ChatStructure:
    """`tools` and `tool_choice` as the structure every dialect uses: the template's own tool
    format where it documents one, the generic one otherwise (server/structured/)."""
    tools = [Tool(t.name, t.description or "", t.input_schema, bool(t.strict)) for t in body.tools or []]
    choice = _choice(body.tool_choice)
    try:
        plan = tool_structure(tools, (choice or ToolChoice("auto")) if tools else None,
                              native_format=bool(tools) and native_format(renderer),
                              tool_choice=None if choice is None or choice.mode == "auto" else choice.mode,
                              output=output_spec(body))
    except EngineInputError as err:
        raise bad_request(str(err), param=err.param or "tool_choice") from None
    return replace(plan, ignored=tuple(unread(body.tool_choice, _CHOICE_KEYS, "tool_choice")))


_CHOICE_KEYS = frozenset({"type", "name", "disable_parallel_tool_use"})


# `output_config.effort` tunes how long Claude thinks; this server does not think, so only the
# default ("high") answers the request that was sent.
_EFFORT_NEUTRAL = (None, "high")


def output_spec(body: CountTokensRequest) -> StructureSpec | None:
    """The reply's JSON Schema from `output_config.format` or `output_format` (not both), or
    None. Any other `output_config` setting would change the reply, so it is a 400 naming it."""
    config = body.output_config or {}
    for key, value in config.items():
        if key == "effort" and value not in _EFFORT_NEUTRAL:
            raise EngineInputError("output_config.effort other than 'high' is not supported", "output_config.effort")
        if key not in ("format", "effort") and value is not None:
            raise EngineInputError(f"output_config.{key} is not supported (format, effort)", f"output_config.{key}")
    return one_spec(from_json_output_format(config.get("format"), "output_config.format"),
                    from_json_output_format(body.output_format, "output_format"))


def _choice(value: dict | None) -> ToolChoice | None:
    """Anthropic's tool_choice: auto, any (a call is required), tool (that one), none."""
    if value is None:
        return None
    kind, parallel = value.get("type"), not value.get("disable_parallel_tool_use", False)
    if kind in ("auto", "none"):
        return ToolChoice(kind, parallel=parallel)
    if kind == "any":
        return ToolChoice("required", parallel=parallel)
    if kind == "tool" and isinstance(value.get("name"), str):
        return ToolChoice("named", value["name"], parallel=parallel)
    raise bad_request("tool_choice.type must be 'auto', 'any', 'tool' (with a name) or 'none'.",
                      param="tool_choice")


def _messages(role: str, blocks) -> list[ToolMessage]:
    """One Anthropic message as neutral turns: an assistant's text and tool_use blocks are one
    turn with its calls; a user's tool_result blocks are tool turns, its text a user turn."""
    if role == "assistant":
        calls = tuple(ToolCall(b.name, b.input) for b in blocks if isinstance(b, ToolUseBlock))
        return [ToolMessage("assistant", _joined(b for b in blocks if isinstance(b, TextBlock)), calls)]
    out: list[ToolMessage] = []
    text: list[TextBlock] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            if text:
                out.append(ToolMessage("user", _joined(text)))
                text = []
            out.append(ToolMessage("tool", block.text(), tool_call_id=block.tool_use_id,
                                   is_error=bool(block.is_error)))
        elif isinstance(block, TextBlock):
            text.append(block)
        else:
            raise bad_request("tool_use blocks belong in assistant messages.", param="messages")
    if text:
        out.append(ToolMessage("user", _joined(text)))
    return out


def conversation(body: CountTokensRequest) -> tuple[list[ToolMessage], list[Breakpoint]]:
    """The neutral turns and the breakpoints, in prompt order (tools, system, messages)."""
    system = [TextBlock(type="text", text=body.system)] if isinstance(body.system, str) else list(body.system or [])
    turns = [ToolMessage("system", _joined(system))] if system else []
    marks: list[Breakpoint] = []
    n_tools = len(body.tools or [])
    for i, tool in enumerate(body.tools or []):
        if tool.cache_control is not None:
            marks.append(Breakpoint(tuple(turns[:1]), i + 1, tool.cache_control.ttl))
    for j, block in enumerate(system):
        if block.cache_control is not None:
            marks.append(Breakpoint((ToolMessage("system", _joined(system[: j + 1])),), n_tools,
                                    block.cache_control.ttl))
    for message in body.messages:
        blocks = message.blocks()
        for j, block in enumerate(blocks):
            if block.cache_control is not None:
                marks.append(Breakpoint((*turns, *_messages(message.role, blocks[: j + 1])), n_tools,
                                        block.cache_control.ttl))
        turns.extend(_messages(message.role, blocks))
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


def render(body: CountTokensRequest, renderer: ChatRenderer) -> tuple[ChatPrompt, tuple[tuple[int, str], ...]]:
    """The prompt and its breakpoints as (token position, TTL label), in order. Runs in a worker
    thread: it renders and tokenizes."""
    return render_with_plan(body, renderer)[:2]


def render_with_plan(body: CountTokensRequest, renderer: ChatRenderer):
    """(prompt, breakpoints, tool structure, turns rendered)."""
    plan = tool_plan(body, renderer)
    messages, marks = conversation(body)
    turns = prompt_turns(messages, plan)
    prompt = renderer.render(turns, plan.template_tools)
    points = []
    for mark in marks:
        prefix = []
        if mark.messages or mark.tools:
            cut = replace(plan, tools=plan.tools[: mark.tools])
            prefix = renderer.render_prefix(prompt_turns(list(mark.messages), cut), cut.template_tools)
        points.append((_shared(prefix, prompt.tokens), mark.ttl))
    return prompt, tuple(sorted(points)), plan, turns


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
    """A breakpoint keeps the prefix up to it for its TTL, refreshed on each hit: the request's
    inserts and the blocks it hits get the last breakpoint's TTL (the shortest: a 1h breakpoint
    must come before a 5m one), and the prefix up to each longer-lived breakpoint its own."""
    ttls = [TTL_SECONDS[label] for _, label in breakpoints]
    ttl = min(ttls, default=None)
    segments = tuple((position, TTL_SECONDS[label]) for position, label in breakpoints
                     if ttl is not None and TTL_SECONDS[label] > ttl)
    return CacheSpec(ttl_s=ttl, end_user=body.metadata.user_id if body.metadata else None,
                     breakpoints=breakpoints, ttl_segments=segments)

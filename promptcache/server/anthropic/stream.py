"""The Messages stream: message_start, content_block_start, content_block_delta...,
content_block_stop, message_delta, message_stop, each an SSE event named by its type.

message_start waits for the engine's first output, since only then is it known how much of
the prompt the cache supplied; its usage and message_delta's carry the prompt-side counts
(cache reads and writes) as Anthropic sends them, message_delta's the final output count.

A reply under a tool format is held back until it ends (its JSON is parsed whole), then sent as
its blocks: any text, then each `tool_use` block with its input as one `input_json_delta`.
"""

from __future__ import annotations

from promptcache.engine.api import RequestOutput
from promptcache.server.anthropic.errors import anthropic_error
from promptcache.server.anthropic.reply import block_events, content_blocks, stop_details
from promptcache.server.anthropic.schema import MessagesUsage, CacheCreation
from promptcache.server.core.sse import sse_event
from promptcache.server.core.usage import TokenUsage
from promptcache.server.generation import Generation


def messages_usage(usage: TokenUsage) -> MessagesUsage:
    """Anthropic's split: `input_tokens` are those after the last cache read or write."""
    written = usage.written
    return MessagesUsage(
        input_tokens=usage.uncached, output_tokens=usage.completion,
        cache_creation_input_tokens=sum(written.values()), cache_read_input_tokens=usage.cached,
        cache_creation=CacheCreation(ephemeral_5m_input_tokens=written.get("5m", 0),
                                     ephemeral_1h_input_tokens=written.get("1h", 0)),
    )


def _event(data: dict) -> str:
    return sse_event(data, event=data["type"])


def message_events(gen: Generation, model: str, plan=None):
    started = False
    held = plan is not None and plan.calls_allowed
    parts: list[str] = []

    def render(out: RequestOutput | None) -> list[str]:
        nonlocal started
        if out is None:
            return []
        events = []
        if not started:
            started = True
            usage = TokenUsage(out.num_prompt_tokens, out.num_cached_tokens, out.num_generated_tokens,
                               gen.written(out.num_cached_tokens))
            message = {"id": gen.sub.request_id, "type": "message", "role": "assistant", "model": model,
                       "content": [], "stop_reason": None, "stop_sequence": None,
                       "usage": messages_usage(usage).model_dump()}
            events.append(_event({"type": "message_start", "message": message}))
            if not held:
                events.append(_event({"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}))
        parts.append(out.new_text)
        if out.new_text and not held:
            events.append(_event({"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": out.new_text}}))
        if out.finished:
            text = "".join(parts)
            if held:
                blocks, reason, sequence = content_blocks(gen, text, plan)
                events += [_event(e) for i, block in enumerate(blocks) for e in block_events(i, block)]
            else:
                reason, sequence = stop_details(gen, text)
                events.append(_event({"type": "content_block_stop", "index": 0}))
            events.append(_event({"type": "message_delta",
                                  "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                  "usage": messages_usage(gen.usage).model_dump()}))
            events.append(_event({"type": "message_stop"}))
        return events

    return gen.events(render, lambda err: _event(anthropic_error(err)))

"""The Messages stream: message_start, content_block_start, content_block_delta...,
content_block_stop, message_delta, message_stop, each an SSE event named by its type.

message_start waits for the engine's first output, since only then is it known how much of
the prompt the cache supplied; its usage and message_delta's carry the prompt-side counts
(cache reads and writes) as Anthropic sends them, message_delta's the final output count.
"""

from __future__ import annotations

from promptcache.engine.api import RequestOutput
from promptcache.server.anthropic.errors import anthropic_error
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


def stop_reason(gen: Generation) -> str:
    return "max_tokens" if gen.finish_reason == "length" else "end_turn"


def _event(data: dict) -> str:
    return sse_event(data, event=data["type"])


def message_events(gen: Generation, model: str):
    started = False

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
            events.append(_event({"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}))
        if out.new_text:
            events.append(_event({"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": out.new_text}}))
        if out.finished:
            events.append(_event({"type": "content_block_stop", "index": 0}))
            events.append(_event({"type": "message_delta",
                                  "delta": {"stop_reason": stop_reason(gen), "stop_sequence": None},
                                  "usage": messages_usage(gen.usage).model_dump()}))
            events.append(_event({"type": "message_stop"}))
        return events

    return gen.events(render, lambda err: _event(anthropic_error(err)))

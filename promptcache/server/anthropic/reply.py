"""A finished Messages generation -> its content blocks, `stop_reason` and `stop_sequence`.

A reply under a tool format is parsed into `tool_use` blocks (stop_reason "tool_use"), with any
text around the calls first, as Anthropic orders them; cut by max_tokens, into the calls it
completed (stop_reason "max_tokens"). A reply that ended on one of the
request's `stop_sequences` says "stop_sequence" and names it: the engine cuts the text before
the stop string, and the generated tokens, decoded whole, show which one it met there.
"""

from __future__ import annotations

import json
import uuid

from promptcache.server.anthropic.schema import TextContent, ToolUseContent
from promptcache.server.generation import Generation
from promptcache.server.structured.openai_chat import ChatStructure, reply_calls


def stop_details(gen: Generation, text: str) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of a reply that produced no call."""
    if gen.finish_reason == "length":
        return "max_tokens", None
    stops = [s for s in gen.spec.sampling.stop if s]
    if stops and gen.token_ids:
        decoded = gen.state.engine.tokenizer.decode(gen.token_ids, gen.spec.sampling.skip_special_tokens)
        found = [(decoded.find(s, max(0, len(text) - len(s))), s) for s in stops]
        found = [(at, s) for at, s in found if at >= 0]
        if found:
            return "stop_sequence", min(found)[1]
    return "end_turn", None


def content_blocks(gen: Generation, text: str, plan: ChatStructure) -> tuple[list, str, str | None]:
    """(content blocks, stop_reason, stop_sequence) of the whole reply. Cut by max_tokens, it
    keeps the calls it completed (stop_reason "max_tokens"); one cut inside its first call has
    no blocks, never the tool format as text."""
    calls, content = reply_calls(text, plan, gen.finish_reason)
    if not calls:
        reason, sequence = stop_details(gen, text)
        return ([] if content is None else [TextContent(text=content)]), reason, sequence
    blocks: list = [TextContent(text=content)] if content else []
    blocks += [ToolUseContent(id=f"toolu_{uuid.uuid4().hex[:24]}", name=c.name, input=c.arguments) for c in calls]
    return blocks, "max_tokens" if gen.finish_reason == "length" else "tool_use", None


def block_events(index: int, block) -> list[dict]:
    """The stream events of one whole block: start, one delta, stop. A tool_use block starts
    with an empty input and sends its arguments as one `input_json_delta`, as Anthropic does."""
    if isinstance(block, ToolUseContent):
        start = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block.input, ensure_ascii=False)}
    else:
        start, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block.text}
    return [{"type": "content_block_start", "index": index, "content_block": start},
            {"type": "content_block_delta", "index": index, "delta": delta},
            {"type": "content_block_stop", "index": index}]

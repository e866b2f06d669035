"""A Responses request -> the conversation to render and the neutral spec; a finished
generation -> the Response object, its usage, and the record stored for the next turn.

`previous_response_id` rebuilds the conversation from the stored history (every earlier input
and reply, as text) followed by this request's input. Rendered by the same template, that
conversation starts with exactly the tokens of the previous turn's prompt, so its prefix is a
cache hit. `instructions` are not carried over, as in OpenAI's API: each request's own go
first, as the system turn.
"""

from __future__ import annotations

from promptcache.server.chat import ChatRenderer, Turn
from promptcache.server.core.spec import CacheSpec, SamplingSpec
from promptcache.server.core.usage import TokenUsage
from promptcache.server.openai.responses.schema import ResponsesRequest
from promptcache.server.openai.responses.store import StoredResponse
from promptcache.server.openai.translate import RETENTION_TTL_S


def history(body: ResponsesRequest, previous: StoredResponse | None) -> list[dict]:
    """Every turn so far, this request's input last, as {"role", "content"} (no instructions)."""
    earlier = previous.history if previous is not None else []
    return earlier + [{"role": item.role, "content": item.text()} for item in body.items()]


def turns(body: ResponsesRequest, conversation: list[dict]) -> list[Turn]:
    system = [Turn("system", body.instructions)] if body.instructions else []
    return system + [Turn(t["role"], t["content"]) for t in conversation]


def tool_dicts(body: ResponsesRequest, renderer: ChatRenderer) -> list[dict] | None:
    """Responses tools (flat function objects) as the nested ones chat templates expect."""
    if not body.tools:
        return None
    renderer.require_tool_format("tools")
    return [{"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}} for tool in body.tools]


def sampling_spec(body: ResponsesRequest) -> SamplingSpec:
    return SamplingSpec(max_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p)


def cache_spec(body: ResponsesRequest) -> CacheSpec:
    return CacheSpec(
        enabled=body.caching.on if body.caching is not None else True, salt=body.cache_salt,
        ttl_s=RETENTION_TTL_S[body.prompt_cache_retention or "in_memory"], cache_key=body.prompt_cache_key,
        end_user=body.end_user(),
    )


def usage_object(usage: TokenUsage, written: int) -> dict:
    return {
        "input_tokens": usage.prompt,
        "input_tokens_details": {"cached_tokens": usage.cached, "cache_write_tokens": written},
        "output_tokens": usage.completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status != "in_progress" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def response_object(response_id: str, created_at: int, model: str, body: ResponsesRequest, *, status: str,
                    output: list[dict], usage: dict | None, length: bool = False, prompt: dict | None = None) -> dict:
    """The Response object with the fields OpenAI's reference lists, echoing the request's."""
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": False, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if length else None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": model,
        "output": output, "parallel_tool_calls": True, "previous_response_id": body.previous_response_id,
        "prompt_cache_key": body.prompt_cache_key, "prompt_cache_retention": body.prompt_cache_retention,
        "safety_identifier": body.safety_identifier, "store": body.store,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": body.text or {"format": {"type": "text"}}, "tool_choice": body.tool_choice or "auto", "tools": body.tools or [],
        "top_p": 1.0 if body.top_p is None else body.top_p, "truncation": "disabled", "usage": usage,
        "user": body.user, "metadata": body.metadata or {}, "prompt": prompt,
    }


def input_items(body: ResponsesRequest, response_id: str) -> list[dict]:
    """This request's input as items with ids, as GET .../input_items lists them."""
    items = []
    for i, item in enumerate(body.items()):
        kind = "output_text" if item.role == "assistant" else "input_text"
        items.append({"type": "message", "id": f"msg_{response_id.removeprefix('resp_')}_{i}", "status": "completed",
                      "role": item.role, "content": [{"type": kind, "text": item.text()}]})
    return items

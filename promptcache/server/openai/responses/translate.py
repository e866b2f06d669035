"""A Responses request -> the conversation to render and the neutral spec; a finished
generation -> the Response object, its usage, and the record stored for the next turn.

`previous_response_id` rebuilds the conversation from the stored history (every earlier input
and reply, as text) followed by this request's input. Rendered by the same template, that
conversation starts with exactly the tokens of the previous turn's prompt, so its prefix is a
cache hit. `instructions` are not carried over, as in OpenAI's API: each request's own go
first, as the system turn.
"""

from __future__ import annotations

from promptcache.server.chat import Turn
from promptcache.server.core.spec import CacheSpec, SamplingSpec
from promptcache.server.core.usage import TokenUsage
from promptcache.server.openai.responses.schema import InputMessage, ResponsesRequest
from promptcache.server.openai.responses.store import StoredResponse
from promptcache.server.openai.responses.tools import entries, message_item, messages  # noqa: F401 (re-exported)
from promptcache.server.openai.translate import RETENTION_TTL_S
from promptcache.server.structured.openai_chat import ChatStructure, prompt_turns
from promptcache.server.structured.tools import ToolMessage


def history(body: ResponsesRequest, previous: StoredResponse | None) -> list[dict]:
    """Every turn so far, this request's input last, as {"role", "content"} (no instructions);
    calls and tool results carry their data (tools.py)."""
    earlier = previous.history if previous is not None else []
    return earlier + entries(body)


def turns(body: ResponsesRequest, conversation: list[dict], plan: ChatStructure | None = None) -> list[Turn]:
    """The turns to render, in the tool format of `plan` (the tool list joins the system turn
    in the generic format; without tools, calls and results are written in it too)."""
    system = [ToolMessage("system", body.instructions)] if body.instructions else []
    return prompt_turns(system + messages(conversation), plan or ChatStructure())


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


def response_object(response_id: str, created_at: int, model: str, body: ResponsesRequest, *, status: str,
                    output: list[dict], usage: dict | None, length: bool = False, prompt: dict | None = None) -> dict:
    """The Response object with the fields OpenAI's reference lists, echoing the request's."""
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": False, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if length else None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": model,
        "output": output, "parallel_tool_calls": body.parallel_tool_calls is not False, "previous_response_id": body.previous_response_id,
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
        if not isinstance(item, InputMessage):  # function calls and outputs, as sent
            items.append({"id": f"fc_{response_id.removeprefix('resp_')}_{i}", "status": "completed",
                          **item.model_dump(exclude_none=True)})
            continue
        kind = "output_text" if item.role == "assistant" else "input_text"
        items.append({"type": "message", "id": f"msg_{response_id.removeprefix('resp_')}_{i}", "status": "completed",
                      "role": item.role, "content": [{"type": kind, "text": item.text()}]})
    return items

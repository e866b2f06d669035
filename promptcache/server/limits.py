"""Request limits, checked before any expensive work, each a 4xx naming the offending field.

Every check here is cheap and runs right after the body is parsed, before the chat template is
rendered or the prompt tokenized: those two are the costly steps, and before this module existed
a 51 KB body of 1,500 messages cost 23 s of server CPU before its 400. The body's byte size is
limited even earlier, from its headers and while it streams in (see `body_limit.py`), so that
parsing itself is bounded.

Defaults are generous for real clients (OpenAI allows 128 tools and 4 stop strings; a chat of
2,048 turns is far past any context we serve) and small enough that the worst accepted body
renders in milliseconds. All are settings (docs/security.md lists them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from promptcache.server.errors import bad_request

# Client-chosen labels: they reach logs, metrics-free stats tables and cache namespaces.
LABEL_FIELDS = ("prompt_cache_key", "cache_salt", "user", "safety_identifier")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 8 * 2**20  # whole request body; past it: 413 before JSON parsing
    max_messages: int = 2048  # chat messages per request (and per pin)
    max_content_parts: int = 256  # text parts in one message's content
    max_tools: int = 128  # entries in `tools` (OpenAI's own cap)
    max_tools_bytes: int = 256 * 2**10  # `tools` as compact JSON
    max_stop_chars: int = 256  # each stop string (OpenAI caps their number at 4)
    max_label_chars: int = 256  # prompt_cache_key, cache_salt, user, safety_identifier
    max_tenant_chars: int = 64  # tenant names: configured, or named by the admin in a body
    max_keys_per_tenant: int = 1000  # prompt_cache_key rows kept per tenant in /v1/cache/stats
    max_records_per_tenant: int = 1000  # sessions, cached contents, pins: of each kind (429 past it)
    max_stored_responses_per_tenant: int = 10_000  # Responses kept for previous_response_id; oldest go first
    max_stored_response_bytes_per_tenant: int = 256 * 2**20  # the same, as stored JSON
    max_logprob_entries: int = 2**18  # logprobs in one response: tokens x (k + 1), all choices (openai/logprobs.py)

    def __post_init__(self) -> None:
        for f in fields(self):
            if not isinstance(getattr(self, f.name), int) or getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be an integer >= 1 (a limit of 0 would refuse every request)")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")


LIMIT_NAMES = frozenset(f.name for f in fields(Limits))


def check_label(value: str | None, limit: int, param: str) -> None:
    if value is not None and len(value) > limit:
        raise bad_request(f"'{param}' is {len(value)} characters long; the limit is {limit}.", param=param)


def check_sampling(body: Any, limits: Limits) -> None:
    """Limits shared by chat and text completions: labels and stop strings."""
    for name in LABEL_FIELDS:
        check_label(getattr(body, name, None), limits.max_label_chars, name)
    stop = body.stop
    for i, s in enumerate([stop] if isinstance(stop, str) else stop or []):
        param = "stop" if isinstance(stop, str) else f"stop[{i}]"
        check_label(s, limits.max_stop_chars, param)


def check_messages(messages: list | None, limits: Limits) -> None:
    if messages is None:
        return
    if len(messages) > limits.max_messages:
        raise bad_request(
            f"{len(messages)} messages is more than the limit of {limits.max_messages}.", param="messages"
        )
    for i, message in enumerate(messages):
        parts = message.content
        if isinstance(parts, list) and len(parts) > limits.max_content_parts:
            raise bad_request(
                f"{len(parts)} content parts is more than the limit of {limits.max_content_parts}.",
                param=f"messages[{i}].content",
            )


def check_tools(tools: list | None, limits: Limits) -> None:
    """Tools are counted and sized even though our templates may ignore them: they are
    passed to the template, and a 1.75 MB list once cost seconds per request."""
    if tools is None:
        return
    if len(tools) > limits.max_tools:
        raise bad_request(f"{len(tools)} tools is more than the limit of {limits.max_tools}.", param="tools")
    size = len(json.dumps(tools, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limits.max_tools_bytes:
        raise bad_request(
            f"'tools' is {size} bytes as JSON; the limit is {limits.max_tools_bytes}.", param="tools"
        )


def check_chat(body: Any, limits: Limits) -> None:
    check_sampling(body, limits)
    check_messages(body.messages, limits)
    check_tools(body.tools, limits)

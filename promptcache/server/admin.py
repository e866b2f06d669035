"""Cache administration: /v1/cache/stats, /v1/cache/flush, /v1/cache/pin, /v1/cache/unpin.

With any key configured, stats and flush need the admin key. Pin and unpin act on the
caller's own tenant (a tenant key pins for its tenant; the admin key may name any tenant),
because pinning is how a tenant keeps its system prompt warm, and must never let one tenant
reach into another's namespace.

The engine's admin calls take its lock, which the stepping thread holds during a step, so
they run in the thread pool rather than stalling the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi import Request as HTTPRequest
from pydantic import Field, model_validator
from starlette.concurrency import run_in_threadpool

from promptcache.server.chat import prompt_from_completion
from promptcache.server.completions import server_state
from promptcache.server.errors import bad_request
from promptcache.server.generation import warm_prefix
from promptcache.server.openai_schema import ChatMessage, Text, TokenIds, OpenAIBody
from promptcache.server.tenants import DEFAULT_TENANT

router = APIRouter(prefix="/v1/cache")


class FlushRequest(OpenAIBody):
    tenant: Text | None = None  # None: every tenant


class PinRequest(OpenAIBody):
    """The prefix to pin, as chat messages (rendered without the assistant header, so every
    conversation that starts with them hits) or as a completion prompt. Pinning first
    prefills the prefix if it is not cached yet, so a pin works on a cold server too."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    prompt: Text | TokenIds | None = None
    cache_salt: Text | None = None
    tenant: Text | None = None  # admin only: the tenant to pin for

    @model_validator(mode="after")
    def _one_prefix(self) -> PinRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' or 'prompt'")
        return self


def _pin_target(http: HTTPRequest, body: PinRequest, authorization: str | None) -> str:
    """The tenant a pin acts on: the admin names it; anyone else gets their own."""
    keys = server_state(http).keys
    if keys.is_admin(authorization):
        return body.tenant or DEFAULT_TENANT
    tenant = keys.tenant(authorization).name  # 401 for an unknown key
    if body.tenant is not None and body.tenant != tenant:
        raise bad_request("only the admin key may pin for another tenant", param="tenant")
    return tenant


async def _prefix_tokens(http: HTTPRequest, body: PinRequest) -> list[int]:
    state = server_state(http)
    if body.messages is not None:
        tokens = await run_in_threadpool(state.renderer.render_prefix, body.messages)
    else:
        tokens = await run_in_threadpool(prompt_from_completion, state.engine.tokenizer, body.prompt)
    if not tokens:
        raise bad_request("the prefix to pin is empty", param="prompt")
    return tokens


@router.get("/stats")
async def cache_stats(http: HTTPRequest, authorization: str | None = Header(default=None)) -> dict:
    state = server_state(http)
    state.keys.require_admin(authorization)
    stats = await run_in_threadpool(state.engine.cache_stats)
    return {
        **(stats or {}),
        "enabled": state.settings.cache_enabled,
        "prompt_cache_keys": state.key_stats.snapshot(),
        "queue": {"waiting": state.engine.num_waiting(), "running": state.engine.num_running()},
    }


@router.post("/flush")
async def cache_flush(
    http: HTTPRequest, body: FlushRequest | None = None, authorization: str | None = Header(default=None)
) -> dict:
    state = server_state(http)
    state.keys.require_admin(authorization)
    tenant = body.tenant if body else None
    flushed = await run_in_threadpool(state.engine.flush_cache, tenant)
    return {"flushed_blocks": flushed, "tenant": tenant}


@router.post("/pin")
async def cache_pin(
    body: PinRequest, http: HTTPRequest, authorization: str | None = Header(default=None)
) -> dict:
    tenant = _pin_target(http, body, authorization)
    tokens = await _prefix_tokens(http, body)
    state = server_state(http)
    await warm_prefix(state, tokens, tenant, body.cache_salt)
    blocks = await run_in_threadpool(state.engine.pin_prefix, tokens, tenant, body.cache_salt)
    return {"pinned_blocks": blocks, "prefix_tokens": len(tokens), "tenant": tenant}


@router.post("/unpin")
async def cache_unpin(
    body: PinRequest, http: HTTPRequest, authorization: str | None = Header(default=None)
) -> dict:
    tenant = _pin_target(http, body, authorization)
    tokens = await _prefix_tokens(http, body)
    engine = server_state(http).engine
    blocks = await run_in_threadpool(engine.unpin_prefix, tokens, tenant, body.cache_salt)
    return {"unpinned_blocks": blocks, "prefix_tokens": len(tokens), "tenant": tenant}

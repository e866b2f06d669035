"""Cache administration: /v1/cache/stats, /v1/cache/flush, /v1/cache/pin, /v1/cache/unpin.

Who may do what (the caller was authenticated from the headers by guard.py):
- stats: the admin sees everything; a tenant sees only its own figures and its own
  prompt_cache_key rows, since other tenants' names, sizes and keys are theirs.
- flush: the admin only. `include_pinned` also releases pins (how an admin takes back a
  cache some tenant pinned full).
- pin and unpin act on the caller's own tenant (the admin may name a configured one), because
  pinning is how a tenant keeps its system prompt warm, and must never let one tenant reach
  into another's namespace or invent tenants (and with them metric label values).

A pin is a retained prefix (retention.py): admitted against the pin budget before its KV is
computed and pinned in the same engine step as its insertion; its owner is the tenant, salt and
prefix, so pinning the same prefix twice holds it once and one unpin releases it.
A pin past the tenant's or the cache's pin budget is a 409 with the figures (errors.py). The
engine's admin calls take its lock, which the stepping thread holds during a step, so they run
in the thread pool rather than stalling the event loop.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from pydantic import Field, model_validator
from starlette.concurrency import run_in_threadpool

from promptcache.server.core.deps import caller_of, server_state
from promptcache.server.core.ignored import check_unknown
from promptcache.server.core.spec import namespace_salt
from promptcache.server.errors import bad_request, unauthorized
from promptcache.server.core.records import Record
from promptcache.server.retention import records, release, retain_record
from promptcache.server.limits import LABEL_FIELDS, check_label
from promptcache.server.prefix import prefix_tokens
from promptcache.server.openai.schema import ChatMessage, OpenAIBody, Text, TokenIds
from promptcache.server.request_id import request_id_of
from promptcache.server.state import ServerState
from promptcache.server.tenants import DEFAULT_TENANT, Caller

router = APIRouter(prefix="/v1/cache")
PIN_KIND = "pin"  # the record of an admin pin (core/records.py)


class FlushRequest(OpenAIBody):
    tenant: Text | None = None  # None: every tenant
    include_pinned: bool = False  # also drop pinned blocks (releasing their pins)


class PinRequest(OpenAIBody):
    """The prefix to pin, as chat messages (rendered without the assistant header, so every
    conversation that starts with them hits) or as a completion prompt. Pinning first
    prefills the prefix if it is not cached yet, so a pin works on a cold server too.
    With --isolate-by user, `user` (or `safety_identifier`) picks the end user's namespace."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    prompt: Text | TokenIds | None = None
    cache_salt: Text | None = None
    user: Text | None = None
    safety_identifier: Text | None = None
    tenant: Text | None = None  # admin only: the tenant to pin for

    @model_validator(mode="after")
    def _one_prefix(self) -> PinRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' or 'prompt'")
        return self


def _known_tenant(state: ServerState, name: str) -> str:
    """A tenant the admin names must be configured (or "default" on an open server)."""
    check_label(name, state.settings.limits.max_tenant_chars, "tenant")
    known = {t.name for t in state.keys.tenants} or {DEFAULT_TENANT}
    if name not in known:
        raise bad_request(f"there is no tenant {name!r}", param="tenant")
    return name


def _pin_target(state: ServerState, caller: Caller, body: PinRequest) -> str:
    """The tenant a pin acts on: the admin names it; anyone else gets their own."""
    if caller.admin:
        return _known_tenant(state, body.tenant or (caller.tenant.name if caller.tenant else DEFAULT_TENANT))
    if caller.tenant is None:
        raise unauthorized("This key cannot pin; use a tenant's API key or the admin key.")
    if body.tenant is not None and body.tenant != caller.tenant.name:
        raise bad_request("only the admin key may pin for another tenant", param="tenant")
    return caller.tenant.name


async def _prefix(http: HTTPRequest, caller: Caller, body: PinRequest) -> tuple[str, list[int], str | None]:
    """(tenant, prefix tokens, namespace salt) of a pin or unpin, after every limit."""
    state = server_state(http)
    tenant = _pin_target(state, caller, body)
    for name in LABEL_FIELDS[1:]:  # cache_salt, user, safety_identifier
        check_label(getattr(body, name), state.settings.limits.max_label_chars, name)
    tokens = await prefix_tokens(state, body.messages, body.prompt, "the prefix to pin")
    end_user = body.safety_identifier if body.safety_identifier is not None else body.user
    return tenant, tokens, namespace_salt(state.settings.isolate_by, body.cache_salt, end_user)


def _forget_pins(state: ServerState, tenant: str | None) -> None:
    store = records(state)
    for record in store.every(PIN_KIND):
        if tenant is None or record.tenant == tenant:
            store.delete(PIN_KIND, record.tenant, record.id)


def pin_owner(tenant: str, salt: str | None, tokens: list[int]) -> str:
    """The retention owner of an admin pin: one per (tenant, salt, prefix)."""
    digest = hashlib.sha256(json.dumps([tenant, salt, tokens]).encode()).hexdigest()[:32]
    return f"pin:{digest}"


def _own_view(stats: dict, tenant: str) -> dict:
    """What a tenant may see of the cache: its own bytes, none of the others' names."""
    by_tenant = stats.get("bytes_by_tenant") or stats.get("tenant_bytes") or {}
    return {"tenant": tenant, "tenant_bytes": {tenant: by_tenant.get(tenant, 0)}}


def _hits(state: ServerState, tenant: str | None) -> dict:
    """Cached tokens read, by tier and by tenant (hit_sources.py); a tenant sees its own."""
    return state.hit_sources.snapshot(tenant) if state.hit_sources is not None else {}


@router.get("/stats")
async def cache_stats(http: HTTPRequest, caller: Caller = Depends(caller_of)) -> dict:
    state = server_state(http)
    if not caller.admin and caller.tenant is None:
        raise unauthorized("This endpoint needs a tenant's API key or the admin key.")
    stats = await run_in_threadpool(state.engine.cache_stats) or {}
    if not caller.admin:
        tenant = caller.tenant.name
        return {**_own_view(stats, tenant), "enabled": state.settings.cache_enabled,
                "prompt_cache_keys": state.key_stats.snapshot(tenant), "hit_tokens": _hits(state, tenant)}
    return {
        **stats,
        "enabled": state.settings.cache_enabled,
        "prompt_cache_keys": state.key_stats.snapshot(),
        "hit_tokens": _hits(state, None),
        "queue": {"waiting": state.engine.num_waiting(), "running": state.engine.num_running()},
    }


@router.post("/flush")
async def cache_flush(http: HTTPRequest, body: FlushRequest | None = None, caller: Caller = Depends(caller_of)) -> dict:
    state = server_state(http)
    if not caller.admin:
        raise unauthorized("This endpoint needs the admin key.")
    check_unknown(http, body, "openai")
    body = body or FlushRequest()
    tenant = None if body.tenant is None else _known_tenant(state, body.tenant)
    flushed = await run_in_threadpool(lambda: state.engine.flush_cache(tenant, include_pinned=body.include_pinned))
    if body.include_pinned:  # the admin took the pins back: not to be restored at the next start
        await run_in_threadpool(_forget_pins, state, tenant)
    return {"flushed_blocks": flushed, "tenant": tenant, "include_pinned": body.include_pinned}


@router.post("/pin")
async def cache_pin(body: PinRequest, http: HTTPRequest, caller: Caller = Depends(caller_of)) -> dict:
    check_unknown(http, body, "openai")
    state = server_state(http)
    tenant, tokens, salt = await _prefix(http, caller, body)
    owner = pin_owner(tenant, salt, tokens)
    # The record (re-pinned at start-up with --restore-retained) counts under the tenant's
    # record cap, as sessions do: distinct salts once made a pin per request, past the cap.
    record = Record(PIN_KIND, tenant, owner, {"owner": owner, "tokens": tokens, "salt": salt,
                                              "model_id": state.engine.model_id})
    kept_record, kept = await retain_record(state, record, tokens, salt=salt, ttl_s=None, what="pins",
                                            http_id=request_id_of(http.scope))
    pinned = kept.cached_tokens if kept_record is not None else 0  # 0: an unpin raced it and won
    return {"pinned_blocks": pinned // state.settings.block_size, "prefix_tokens": len(tokens), "tenant": tenant}


@router.post("/unpin")
async def cache_unpin(body: PinRequest, http: HTTPRequest, caller: Caller = Depends(caller_of)) -> dict:
    check_unknown(http, body, "openai")
    state = server_state(http)
    tenant, tokens, salt = await _prefix(http, caller, body)
    owner = pin_owner(tenant, salt, tokens)
    blocks = await release(state, owner)
    await run_in_threadpool(records(state).delete, PIN_KIND, tenant, owner)
    return {"unpinned_blocks": blocks, "prefix_tokens": len(tokens), "tenant": tenant}

"""POST /v1/responses, GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items.

Stored responses are the caller's tenant's own: a lookup names the tenant, so another tenant's
id is a 404 exactly like an id that never existed. The store is SQLite, whose calls run in a
worker thread.
"""

from __future__ import annotations

import functools
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Request as HTTPRequest
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from promptcache.server.context.sessions import attach as attach_session
from promptcache.server.core.deps import check_model, off_loop, served_name, server_state, tenant_of
from promptcache.server.core.ignored import check_unknown, note_ignored
from promptcache.server.core.spec import GenerationSpec
from promptcache.server.structured.compile import compile_structure, ignored_header
from promptcache.server.errors import APIError
from promptcache.server.generation import Generation, respond, start
from promptcache.server.limits import LABEL_FIELDS, check_label, check_messages, check_tools
from promptcache.server.openai.responses.schema import ResponsesRequest
from promptcache.server.openai.responses.store import ResponseStore, StoredResponse
from promptcache.server.openai.responses.stream import EventStream
from promptcache.server.openai.responses.tool_stream import ToolEventStream
from promptcache.server.openai.responses.tools import reply as tool_reply
from promptcache.server.openai.responses.tools import tool_plan
from promptcache.server.openai.responses.translate import (
    cache_spec,
    history,
    input_items,
    response_object,
    sampling_spec,
    turns,
    usage_object,
)
from promptcache.server.prompts.use import prompt_turns
from promptcache.server.request_id import request_id_of
from promptcache.server.state import ServerState
from promptcache.server.tenants import Tenant
from promptcache.tiers.store import StoreUnavailable

router = APIRouter(prefix="/v1/responses")


def not_found(response_id: str, param: str | None = None) -> APIError:
    return APIError(404, f"No response found with id '{response_id[:64]}'.", param=param, code="not_found")


def store_of(state: ServerState) -> ResponseStore:
    return state.responses


async def _store_call(fn, *args):
    """A store call in a worker thread; a store that cannot be reached is a 503, not a 500."""
    try:
        return await run_in_threadpool(fn, *args)
    except StoreUnavailable:
        raise APIError(503, "The response store is unavailable; try again shortly.", code="store_unavailable",
                       type="server_error") from None


async def _stored(state: ServerState, tenant: str, response_id: str, param: str | None = None) -> StoredResponse:
    check_label(response_id, state.settings.limits.max_label_chars, param or "response_id")
    record = await _store_call(store_of(state).get, tenant, response_id)
    if record is None:
        raise not_found(response_id, param)
    return record


def written(gen: Generation) -> int:
    """Prompt tokens this request wrote to the cache: its full blocks past the hit, all of which
    the next turn of the chain can read (a block the same prompt sent twice rewrites is
    counted again)."""
    settings = gen.state.settings
    if not (settings.cache_enabled and gen.spec.cache.enabled):
        return 0
    size = settings.block_size
    return max(0, len(gen.spec.tokens) // size * size - gen.usage.cached)


@router.post("", response_model=None)
async def create_response(body: ResponsesRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> Response:
    check_unknown(http, body, "openai")
    state = server_state(http)
    arrived = state.clock()
    check_model(state, body.model)
    limits = state.settings.limits
    for name in LABEL_FIELDS:
        check_label(getattr(body, name), limits.max_label_chars, name)
    check_tools(body.tools, limits)
    previous = None
    if body.previous_response_id is not None:
        previous = await _stored(state, tenant.name, body.previous_response_id, "previous_response_id")
    conversation = history(body, previous)
    lead, echo = await prompt_turns(state, tenant.name, body.prompt)  # a registered template goes first
    plan = tool_plan(body, state.renderer)  # tools, tool_choice and text.format: one output structure
    note_ignored(http, plan.ignored, "openai")
    chat = lead + turns(body, conversation, plan)
    check_messages(chat, limits)
    compiled = await compile_structure(state.engine, plan.spec)
    prompt = await off_loop(state, state.renderer.render, chat, plan.template_tools)
    http_id = request_id_of(http.scope)
    response_id = f"resp_{http_id.removeprefix('req_')}"
    spec = GenerationSpec(endpoint="responses", request_id=response_id, tenant=tenant.name, tokens=prompt.tokens,
                          roles=prompt.roles, sampling=sampling_spec(body), cache=cache_spec(body),
                          prompt_text=prompt.text, structure=compiled, headers=ignored_header(compiled))
    spec = await attach_session(state, http, spec)
    gen = start(state, spec, http_id=http_id, arrived=arrived)
    created, model = int(state.wall_clock()), served_name(state)
    item_id = f"msg_{uuid.uuid4().hex}"
    outcome = functools.cache(lambda text: tool_reply(text, plan, item_id, gen.finish_reason))  # one id a call

    async def finish(text: str) -> dict:
        length = gen.finish_reason == "length"
        output, entry, _ = outcome(text)
        final = response_object(response_id, created, model, body, status="incomplete" if length else "completed",
                                output=output, usage=usage_object(gen.usage, written(gen)), length=length, prompt=echo)
        if body.store:
            record = StoredResponse(response_id, tenant.name, final, input_items(body, response_id),
                                    conversation + [entry])
            await _store_call(store_of(state).put, record)
        return final

    events = None
    if body.stream:
        opening = response_object(response_id, created, model, body, status="in_progress", output=[], usage=None,
                                  prompt=echo)
        stream = ToolEventStream(gen, item_id, opening, outcome) if plan.calls_allowed else EventStream(gen, item_id, opening)
        events = stream.events(finish)
    return await respond(gen, http, events, finish)


@router.get("/{response_id}")
async def get_response(response_id: str, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    return (await _stored(server_state(http), tenant.name, response_id)).response


@router.delete("/{response_id}")
async def delete_response(response_id: str, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    check_label(response_id, state.settings.limits.max_label_chars, "response_id")
    if not await _store_call(store_of(state).delete, tenant.name, response_id):
        raise not_found(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/{response_id}/input_items")
async def list_input_items(response_id: str, http: HTTPRequest, tenant: Tenant = Depends(tenant_of),
                           order: Literal["asc", "desc"] = "desc",
                           limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict:
    every = (await _stored(server_state(http), tenant.name, response_id)).input_items
    items = (every if order == "asc" else every[::-1])[:limit]
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": len(every) > limit}

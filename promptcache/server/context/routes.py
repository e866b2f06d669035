"""/v1/context: create, read, list, re-time and delete sessions (sessions.py).

POST takes `model`, `messages` (rendered without the assistant header, so every conversation
that starts with them hits) or `prompt`, and `ttl` seconds (or the `x-session-ttl` header; one
hour by default). It computes and pins the prefix now and answers `session_id`,
`cached_tokens` and `expires_at`. Sessions are the caller's tenant's: another tenant's id is a
404. A prefix past the tenant's pin budget is a 409 `pin_budget_exceeded` naming the budget.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from pydantic import Field, model_validator
from starlette.concurrency import run_in_threadpool

from promptcache.server.context import sessions
from promptcache.server.core.deps import check_model, server_state, tenant_of
from promptcache.server.core.ignored import check_unknown
from promptcache.server.core.spec import namespace_salt
from promptcache.server.errors import bad_request
from promptcache.server.prefix import prefix_tokens
from promptcache.server.openai.schema import ChatMessage, OpenAIBody, Text, TokenIds
from promptcache.server.request_id import request_id_of
from promptcache.server.retention import release, retained_tokens, sweep
from promptcache.server.tenants import Tenant

router = APIRouter(prefix="/v1/context")


class ContextRequest(OpenAIBody):
    model: Text
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    prompt: Text | TokenIds | None = None
    ttl: float | None = None

    @model_validator(mode="after")
    def _one_prefix(self) -> ContextRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' or 'prompt'")
        return self


class ContextUpdate(OpenAIBody):
    ttl: float | None = None


@router.post("")
async def create_context(body: ContextRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    check_unknown(http, body, "openai")
    state = server_state(http)
    check_model(state, body.model)
    ttl_s = sessions.ttl_of(http, body.ttl, sessions.DEFAULT_TTL_S)
    tokens = await prefix_tokens(state, body.messages, body.prompt, "the session's prefix")
    salt = namespace_salt(state.settings.isolate_by, None, None)
    return await sessions.create(state, tenant=tenant.name, tokens=tokens, salt=salt, ttl_s=ttl_s,
                                 model=body.model, http_id=request_id_of(http.scope))


@router.get("")
async def list_contexts(http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    await sweep(state)
    found = await run_in_threadpool(sessions.records(state).list, sessions.KIND, tenant.name)
    data = [sessions.view(r, await retained_tokens(state, sessions.owner_of(tenant.name, r.id))) for r in found]
    return {"object": "list", "data": data}


@router.get("/{session_id}")
async def get_context(session_id: str, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    record = await sessions.find(state, tenant.name, session_id)
    return sessions.view(record, await retained_tokens(state, sessions.owner_of(tenant.name, session_id)))


@router.patch("/{session_id}")
async def update_context(session_id: str, http: HTTPRequest, body: ContextUpdate | None = None,
                         tenant: Tenant = Depends(tenant_of)) -> dict:
    check_unknown(http, body, "openai")
    state = server_state(http)
    ttl_s = sessions.ttl_of(http, body.ttl if body else None, None)
    if ttl_s is None:
        raise bad_request("give the new 'ttl' in seconds (or the x-session-ttl header)", param="ttl")
    record = await sessions.find(state, tenant.name, session_id)
    record = await sessions.put_ttl(state, record, ttl_s)
    return sessions.view(record, await retained_tokens(state, sessions.owner_of(tenant.name, session_id)))


@router.delete("/{session_id}")
async def delete_context(session_id: str, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    await sweep(state)
    sessions.check_id(session_id)
    if not await run_in_threadpool(sessions.records(state).delete, sessions.KIND, tenant.name, session_id):
        raise sessions.not_found(session_id)
    await release(state, sessions.owner_of(tenant.name, session_id))
    return {"id": session_id, "object": "context.deleted", "deleted": True}

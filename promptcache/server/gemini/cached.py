"""/v1beta/cachedContents: Gemini's explicit caches, as retained prefixes (retention.py).

POST renders `systemInstruction`, `tools` (under `toolConfig`, in the tool format a request
using them renders: gemini/tools.py) and `contents` as the start of a conversation (no model
header, so every request that continues them hits), computes and pins that prefix for
`ttl` or until `expireTime` (one hour by default), and answers the CachedContent resource with
`usageMetadata.totalTokenCount`. GET, list, PATCH (a new `ttl` or `expireTime` only) and
DELETE act on the caller's tenant's cached contents: another tenant's name is NOT_FOUND. A
prefix past the tenant's pin budget is refused (409 RESOURCE_EXHAUSTED naming the budget)
before anything is computed. Records outlive a restart (core/records.py); the pin is taken
again on first use.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from starlette.concurrency import run_in_threadpool

from promptcache.server.core.deps import check_model, off_loop, server_state, tenant_of
from promptcache.server.core.records import Record
from promptcache.server.errors import APIError, bad_request
from promptcache.server.gemini import translate as tr
from promptcache.server.gemini.schema import CachedContentRequest, CachedContentUpdate, Content, Tool, ToolConfig
from promptcache.server.gemini.tools import plan, turns
from promptcache.server.request_id import request_id_of
from promptcache.server.retention import deadline, extend, held_record, records, release, retain_record, sweep
from promptcache.server.state import ServerState
from promptcache.server.tenants import Tenant

KIND = "cached_content"
PREFIX = "/v1beta/cachedContents"
MAX_ID_CHARS = 64
router = APIRouter(prefix=PREFIX)


def owner_of(tenant: str, content_id: str) -> str:
    return "cached_content:" + json.dumps([tenant, content_id])


def content_id(name: str) -> str:
    """The id in "cachedContents/ID" (or a bare ID)."""
    cid = name.removeprefix("cachedContents/")
    if not 0 < len(cid) <= MAX_ID_CHARS or not cid.isprintable() or "/" in cid:
        raise bad_request(f"a cached content's name is cachedContents/ID with an ID of 1 to {MAX_ID_CHARS} "
                          "characters", param="cachedContent")
    return cid


def not_found(cid: str) -> APIError:
    return APIError(404, f"CachedContent not found (or permission denied): cachedContents/{cid}",
                    code="cached_content_not_found")


@dataclass(frozen=True)
class Prefix:
    """What a cached content holds, as a request would send it."""

    system: Content | None
    tools: list[Tool]
    tool_config: ToolConfig | None
    contents: list[Content]


def prefix_of(data: dict) -> Prefix:
    return Prefix(Content.model_validate(data["systemInstruction"]) if data.get("systemInstruction") else None,
                  [Tool.model_validate(t) for t in data.get("tools") or []],
                  ToolConfig.model_validate(data["toolConfig"]) if data.get("toolConfig") else None,
                  [Content.model_validate(c) for c in data.get("contents") or []])


def resource(record: Record) -> dict:
    data = record.data
    out = {"name": f"cachedContents/{record.id}", "model": f"models/{data['model']}",
           "createTime": tr.rfc3339(data["createTime"]), "updateTime": tr.rfc3339(data["updateTime"]),
           "expireTime": tr.rfc3339(record.expires_at), "usageMetadata": {"totalTokenCount": len(data["tokens"])}}
    if data.get("displayName") is not None:
        out["displayName"] = data["displayName"]
    return out


async def find(state: ServerState, tenant: str, name: str) -> Record:
    """The tenant's live cached content, its pin held in this process; NOT_FOUND otherwise."""
    cid = content_id(name)
    return await held_record(state, KIND, tenant, cid, owner_of(tenant, cid), not_found(cid))


@router.post("")
async def create(body: CachedContentRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    model = tr.model_name(body.model)
    check_model(state, model)
    if not body.contents and body.systemInstruction is None:
        raise bad_request("a cached content needs contents or a systemInstruction", param="contents")
    now = state.wall_clock()
    ttl_s = tr.lifetime(body.ttl, body.expireTime, now, tr.DEFAULT_TTL_S)
    data = body.model_dump(mode="json", exclude_none=True, exclude={"ttl", "expireTime"})
    structure = plan(state.renderer, body.tools, body.toolConfig, None)
    prefix = turns(structure, body.systemInstruction, body.contents)
    tokens = await off_loop(state, state.renderer.render_prefix, prefix, structure.template_tools)
    cid = uuid.uuid4().hex[:24]
    record = Record(KIND, tenant.name, cid, {**data, "model": model, "tokens": tokens, "createTime": now,
                                             "updateTime": now, "owner": owner_of(tenant.name, cid),
                                             "model_id": state.engine.model_id}, deadline(state, ttl_s))
    # Counted under the record cap before the prefill; deleted meanwhile: not found (retention.py).
    kept, _ = await retain_record(state, record, tokens, salt=None, ttl_s=ttl_s, what="cached contents",
                                  http_id=request_id_of(http.scope))
    if kept is None:
        raise not_found(cid)
    return resource(kept)


@router.get("")
async def list_cached(http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    await sweep(state)
    found = await run_in_threadpool(records(state).list, KIND, tenant.name)
    return {"cachedContents": [resource(r) for r in found]}


@router.get("/{cid}")
async def get_cached(cid: str, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    return resource(await find(server_state(http), tenant.name, cid))


@router.patch("/{cid}")
async def update_cached(cid: str, body: CachedContentUpdate, http: HTTPRequest,
                        tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    record = await find(state, tenant.name, cid)
    now = state.wall_clock()
    ttl_s = tr.lifetime(body.ttl, body.expireTime, now, None)
    if ttl_s is None:
        raise bad_request("give the new ttl or expireTime", param="ttl")
    expires_at = extend(state, owner_of(tenant.name, record.id), ttl_s)
    record = Record(KIND, record.tenant, record.id, {**record.data, "updateTime": now}, expires_at)
    if not await run_in_threadpool(records(state).update, record):  # deleted since `find`: stays deleted
        await release(state, owner_of(tenant.name, record.id))
        raise not_found(record.id)
    return resource(record)


@router.delete("/{cid}")
async def delete_cached(cid: str, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    await sweep(state)
    cid = content_id(cid)
    if not await run_in_threadpool(records(state).delete, KIND, tenant.name, cid):
        raise not_found(cid)
    await release(state, owner_of(tenant.name, cid))
    return {}

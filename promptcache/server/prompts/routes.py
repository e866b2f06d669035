"""The prompt registry: /v1/prompts.

    POST   /v1/prompts                         {template, name?, warm?}     -> the prompt, version "1"
    GET    /v1/prompts                         the tenant's prompts
    GET    /v1/prompts/{id}[?version=N]        the default version, or version N
    GET    /v1/prompts/{id}/versions           every version
    GET    /v1/prompts/{id}/versions/{N}
    POST   /v1/prompts/{id}/versions           {template, warm?, make_default?} -> the new version
    POST   /v1/prompts/{id}/default            {version}
    DELETE /v1/prompts/{id}                    the prompt and all its versions (pins released)

A prompt is its tenant's: every call is scoped by the caller's tenant, so another tenant's id is
a 404 like an id that never existed. Limits (template size, variables, versions, prompts) are
checked before anything is stored or computed. With `warm: true` the version's static prefix
is computed and pinned before the call answers; a prefix past the tenant's pin budget is a 409
and nothing is stored.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from promptcache.server.core.deps import server_state, tenant_of
from promptcache.server.errors import APIError, bad_request
from promptcache.server.limits import check_label
from promptcache.server.prompts import warm as warming
from promptcache.server.prompts.schema import LIMITS, CreatePrompt, CreateVersion, SetDefault, version_number
from promptcache.server.prompts.store import PromptInfo, PromptNotFound, PromptVersion
from promptcache.server.prompts.template import Template, TemplateError, parse
from promptcache.server.prompts.use import check_id, prompt_not_found, store_call
from promptcache.server.request_id import request_id_of
from promptcache.server.state import ServerState
from promptcache.server.tenants import Tenant

router = APIRouter(prefix="/v1/prompts")

# One lock per (server, tenant) while a registration counts and stores: without it, concurrent
# creations each counted below the limit before any stored, and all were stored. Held across a
# warm prefill, so one tenant's registrations run one at a time; other tenants are not held.
_REGISTERING: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = weakref.WeakValueDictionary()


def _registering(state: ServerState, tenant: str) -> asyncio.Lock:
    """The lock a tenant's registrations hold from their limit checks until they are stored."""
    return _REGISTERING.setdefault((id(state), tenant), asyncio.Lock())


def _template(text: str) -> Template:
    try:
        return parse(text, max_chars=LIMITS.max_template_chars, max_variables=LIMITS.max_variables)
    except TemplateError as exc:
        raise bad_request(str(exc), param=exc.param) from None


async def _check_room(state: ServerState, tenant: str, template: str) -> None:
    """A 429 when the tenant's stored templates would pass its storage limit."""
    stored = await store_call(state, state.prompts.stored_chars, tenant)
    if stored + len(template) > LIMITS.max_tenant_chars:
        raise APIError(429, f"this tenant stores {stored} characters of templates; {len(template)} more would pass "
                       f"the limit of {LIMITS.max_tenant_chars}: delete a prompt first", code="prompt_storage_limit",
                       type="invalid_request_error")


def prompt_object(info: PromptInfo, version: PromptVersion, warm_tokens: int | None = None) -> dict:
    template = Template(version.template)
    out = {
        "id": info.id, "object": "prompt", "name": info.name, "version": str(version.version),
        "default_version": str(info.default_version), "latest_version": str(info.latest_version),
        "template": version.template, "variables": list(template.variables), "warm": version.warm,
        "created_at": int(version.created_at),
    }
    if warm_tokens is not None:
        out["warm_tokens"] = warm_tokens  # prompt tokens now cached and pinned
    return out


def version_object(version: PromptVersion) -> dict:
    return {"object": "prompt.version", "prompt_id": version.prompt_id, "version": str(version.version),
            "template": version.template, "variables": list(Template(version.template).variables),
            "warm": version.warm, "created_at": int(version.created_at)}


async def _info(state: ServerState, tenant: str, prompt_id: str) -> PromptInfo:
    check_id(prompt_id, "prompt_id")
    info = await store_call(state, state.prompts.info, tenant, prompt_id)
    if info is None:
        raise prompt_not_found(prompt_id, param="prompt_id")
    return info


async def _warmed(state: ServerState, tenant: str, version: PromptVersion, http: HTTPRequest, store) -> int | None:
    """Pin a warm version's prefix before `store()` records it; a failed store releases the pin
    unless an earlier version with the same static prefix held it already."""
    if not version.warm:
        await store()
        return None
    shared = warming.held(state, tenant, version)
    tokens = await warming.warm(state, tenant, version, request_id_of(http.scope))
    try:
        await store()
    except BaseException:
        if not shared:
            await warming.release(state, tenant, [version])
        raise
    return tokens


@router.post("")
async def create_prompt(body: CreatePrompt, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    check_label(body.name, state.settings.limits.max_label_chars, "name")
    _template(body.template)
    async with _registering(state, tenant.name):
        if await store_call(state, state.prompts.count, tenant.name) >= LIMITS.max_prompts:
            raise APIError(429, f"this tenant has {LIMITS.max_prompts} prompts, the limit; delete one first",
                           code="prompt_limit", type="invalid_request_error")
        await _check_room(state, tenant.name, body.template)
        prompt_id = f"pmpt_{uuid.uuid4().hex}"
        draft = PromptVersion(prompt_id, 1, body.template, body.warm, state.wall_clock())
        created: list[PromptInfo] = []

        async def store():
            created.append(await store_call(state, state.prompts.create, tenant.name, prompt_id, body.name,
                                            body.template, body.warm))

        tokens = await _warmed(state, tenant.name, draft, http, store)
    return prompt_object(created[0], draft, tokens)


@router.get("")
async def list_prompts(http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    infos = await store_call(state, state.prompts.prompts, tenant.name)
    data = [{"id": i.id, "object": "prompt", "name": i.name, "default_version": str(i.default_version),
             "latest_version": str(i.latest_version), "created_at": int(i.created_at)} for i in infos]
    return {"object": "list", "data": data}


@router.get("/{prompt_id}")
async def get_prompt(prompt_id: str, http: HTTPRequest, version: str | None = None,
                     tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    info = await _info(state, tenant.name, prompt_id)
    number = version_number(version, "version")
    found = await store_call(state, state.prompts.version, tenant.name, prompt_id, number)
    if found is None:
        raise prompt_not_found(prompt_id, number, param="version")
    return prompt_object(info, found)


@router.get("/{prompt_id}/versions")
async def list_versions(prompt_id: str, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    await _info(state, tenant.name, prompt_id)
    versions = await store_call(state, state.prompts.versions, tenant.name, prompt_id)
    return {"object": "list", "data": [version_object(v) for v in versions]}


@router.get("/{prompt_id}/versions/{version}")
async def get_version(prompt_id: str, version: str, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    return await get_prompt(prompt_id, http, version, tenant)


@router.post("/{prompt_id}/versions")
async def create_version(prompt_id: str, body: CreateVersion, http: HTTPRequest,
                         tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    _template(body.template)
    async with _registering(state, tenant.name):
        info = await _info(state, tenant.name, prompt_id)
        if info.latest_version >= LIMITS.max_versions:
            raise APIError(429, f"this prompt has {LIMITS.max_versions} versions, the limit; register a new prompt",
                           code="version_limit", type="invalid_request_error")
        await _check_room(state, tenant.name, body.template)
        draft = PromptVersion(prompt_id, info.latest_version + 1, body.template, body.warm, state.wall_clock())
        added: list[PromptVersion] = []

        async def store():
            try:
                added.append(await store_call(state, state.prompts.add_version, tenant.name, prompt_id,
                                              body.template, body.warm))
                if body.make_default:
                    await store_call(state, state.prompts.set_default, tenant.name, prompt_id, added[0].version)
            except PromptNotFound:  # deleted meanwhile
                raise prompt_not_found(prompt_id, param="prompt_id") from None

        tokens = await _warmed(state, tenant.name, draft, http, store)
    info = await _info(state, tenant.name, prompt_id)
    return prompt_object(info, added[0], tokens)


@router.post("/{prompt_id}/default")
async def set_default(prompt_id: str, body: SetDefault, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    check_id(prompt_id, "prompt_id")
    number = version_number(body.version, "version")
    try:
        info = await store_call(state, state.prompts.set_default, tenant.name, prompt_id, number)
    except PromptNotFound:
        raise prompt_not_found(prompt_id, number, param="version") from None
    version = await store_call(state, state.prompts.version, tenant.name, prompt_id, number)
    return prompt_object(info, version)


@router.delete("/{prompt_id}")
async def delete_prompt(prompt_id: str, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    check_id(prompt_id, "prompt_id")
    versions = await store_call(state, state.prompts.delete, tenant.name, prompt_id)
    if not versions:
        raise prompt_not_found(prompt_id, param="prompt_id")
    await warming.release(state, tenant.name, versions)
    return {"id": prompt_id, "object": "prompt.deleted", "deleted": True}

"""Sessions: a tenant's pinned, growing conversation prefix, with a TTL.

A session is a record (`core/records.py`, kind "session") plus a retained prefix
(`retention.py`) owned by `owner_of(tenant, id)`. Creating one prefills and pins its prefix.
A turn names it (header `x-session-id`, or the body's `session_id`, which the clients send
through `extra_body`) and sends its whole prompt, as every chat client does; the session then:

- admits the turn against the tenant's pin budget before any KV is computed (409 if it does
  not fit: the turn is refused, nothing is evicted);
- pins the turn's prompt and reply blocks under the session as they are inserted, and drops
  the session's previous, shorter path, so turn N+1 computes only what is new since turn N;
- pushes the deadline to `ttl` seconds from now, and records the path pinned so far (the
  previous turns' prompts and replies) for a restart.

Reply blocks are kept from decode, whose rows match a prefill's within float tolerance, not
bitwise (docs/design.md): a session trades that for not recomputing replies.

Another tenant's session id is not found (404). The record outlives the process (SQLite file,
or the tiers' Redis for replicas); a process that holds no pin for a live session (after a
restart, or another replica) retains it again on first use, reading the KV back from the
disk/Redis tiers when they are configured.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import replace

from fastapi import Request as HTTPRequest
from starlette.concurrency import run_in_threadpool

from promptcache.server.core.records import Record
from promptcache.server.core.spec import GenerationSpec
from promptcache.server.errors import APIError, bad_request
from promptcache.server.retention import deadline, extend, held_record, records, release, retain_record, sweep
from promptcache.server.state import ServerState

KIND = "session"
SESSION_HEADER = "x-session-id"
TTL_HEADER = "x-session-ttl"
DEFAULT_TTL_S = 3600.0
MAX_TTL_S = 30 * 86_400.0
MAX_ID_CHARS = 64


def owner_of(tenant: str, session_id: str) -> str:
    return "session:" + json.dumps([tenant, session_id])


def parse_ttl(value: object, param: str) -> float:
    """A TTL in seconds from a body number or a header string: positive, finite, at most 30 days."""
    try:
        ttl = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise bad_request(f"{param} must be a number of seconds", param=param) from None
    if not (math.isfinite(ttl) and 0 < ttl <= MAX_TTL_S):
        raise bad_request(f"{param} must be more than 0 and at most {MAX_TTL_S:.0f} seconds", param=param)
    return ttl


def ttl_of(http: HTTPRequest, body_ttl: object | None, default: float | None) -> float | None:
    """The body's `ttl`, else the `x-session-ttl` header, else `default`."""
    if body_ttl is not None:
        return parse_ttl(body_ttl, "ttl")
    header = http.headers.get(TTL_HEADER)
    return parse_ttl(header, TTL_HEADER) if header is not None else default


def check_id(session_id: object, param: str = "session_id") -> str:
    if not isinstance(session_id, str) or not 0 < len(session_id) <= MAX_ID_CHARS or not session_id.isprintable():
        raise bad_request(f"{param} must be a string of 1 to {MAX_ID_CHARS} printable characters", param=param)
    return session_id


def not_found(session_id: str) -> APIError:
    return APIError(404, f"No session found with id {json.dumps(session_id)}.", param="session_id",
                    code="session_not_found", type="invalid_request_error")


def view(record: Record, cached_tokens: int) -> dict:
    data = record.data
    return {"id": record.id, "session_id": record.id, "object": "context", "model": data["model"],
            "prompt_tokens": len(data["tokens"]), "cached_tokens": cached_tokens, "ttl": data["ttl_s"],
            "created_at": int(data["created_at"]),
            "expires_at": None if record.expires_at is None else int(record.expires_at)}


async def create(state: ServerState, *, tenant: str, tokens: list[int], salt: str | None, ttl_s: float,
                 model: str, http_id: str) -> dict:
    """A new session; its record is counted under the tenant's cap before the prefill (429 past
    it), and one deleted while its prefix was computed is a 404."""
    session_id = "ctx_" + uuid.uuid4().hex
    record = Record(KIND, tenant, session_id, {"tokens": tokens, "salt": salt, "ttl_s": ttl_s, "model": model,
                                               "created_at": state.wall_clock(), "owner": owner_of(tenant, session_id),
                                               "model_id": state.engine.model_id}, deadline(state, ttl_s))
    kept_record, kept = await retain_record(state, record, tokens, salt=salt, ttl_s=ttl_s, what="sessions",
                                            http_id=http_id)
    if kept_record is None:
        raise not_found(session_id)
    return view(kept_record, kept.cached_tokens)


async def find(state: ServerState, tenant: str, session_id: str) -> Record:
    """The tenant's live session, its pin retained in this process (again, after a restart or
    on another replica); 404 for an unknown, expired or other tenant's id (retention.held_record)."""
    check_id(session_id)
    return await held_record(state, KIND, tenant, session_id, owner_of(tenant, session_id), not_found(session_id))


async def put_ttl(state: ServerState, record: Record, ttl_s: float, tokens: list[int] | None = None) -> Record:
    """Give the session a new TTL from now (and, after a turn, its new prompt); returns it. The
    record is updated only if it still exists: a session deleted since it was read (a DELETE
    racing this PATCH or turn) stays deleted, its pin is released, and this is a 404."""
    owner = owner_of(record.tenant, record.id)
    expires_at = extend(state, owner, ttl_s)
    data = {**record.data, "ttl_s": ttl_s, **({"tokens": tokens} if tokens is not None else {})}
    updated = Record(KIND, record.tenant, record.id, data, expires_at)
    if not await run_in_threadpool(records(state).update, updated):
        await release(state, owner)
        raise not_found(record.id)
    return updated


async def session_id_of(http: HTTPRequest) -> str | None:
    """The turn's session: the `x-session-id` header, else the JSON body's `session_id`."""
    header = http.headers.get(SESSION_HEADER)
    if header is not None:
        return check_id(header, SESSION_HEADER)
    try:
        body = await http.json()  # already read and parsed by the route: cached
    except ValueError:
        return None
    value = body.get("session_id") if isinstance(body, dict) else None
    return None if value is None else check_id(value)


async def refuse(http: HTTPRequest, why: str) -> None:
    """400 when a session is named for a request shape sessions do not serve (a session holds
    one conversation, not several choices), rather than ignoring it."""
    if await session_id_of(http) is not None:
        raise bad_request(f"a session cannot be used with {why}", param="session_id")


async def attach(state: ServerState, http: HTTPRequest, spec: GenerationSpec) -> GenerationSpec:
    """A dialect route's hook, between building its spec and starting it: with a session named,
    the turn is pinned under the session and the session extended; else `spec` unchanged. Every
    request sweeps expired pins first, so an expired session's blocks become ordinary entries
    under ordinary traffic too."""
    await sweep(state)
    session_id = await session_id_of(http)
    if session_id is None:
        return spec
    record = await find(state, spec.tenant, session_id)
    owner = owner_of(spec.tenant, session_id)
    held = state.engine.retained.held(owner)  # the path pinned so far: every turn's prompt
    await put_ttl(state, record, record.data["ttl_s"], list(held.tokens) if held else None)
    # The reply's own KV is not kept (cache_reply stays off): decode computes it one row at a
    # time, equal to a prefill's only within tolerance, and reusing it would let a hit change
    # the output. The next turn's prompt holds the reply and pins it as prompt rows, bitwise.
    cache = replace(spec.cache, pin_owner=owner)
    return replace(spec, cache=cache, headers={**spec.headers, SESSION_HEADER: session_id})

"""Retention: keep a prefix's KV pinned for an owner, admitted before any of it is computed.

The one mechanism under sessions (/v1/context), cached contents (/v1beta/cachedContents),
registered warm prompts and admin pins. Contract:

- `await retain(state, tokens, tenant=, salt=, ttl_s=, owner=)` prefills `tokens` if needed and
  pins their full blocks for `owner`, atomically with their insertion (the engine pins in the
  same step that inserts, `cache/retained.py`). The prefix is admitted against the tenant's pin
  budget when submitted, before any KV is computed: one that does not fit raises
  PinBudgetExceeded (the server answers 409 `pin_budget_exceeded`, naming the tenant or global
  budget, with the figures in bytes), and nothing is computed, cached or evicted. Room for the
  new blocks is made only from the tenant's own unpinned blocks and free space: a retained
  prefix never evicts a pin or another tenant's block. Retaining again for the same owner moves
  its pin to the new prefix (shared blocks stay pinned throughout).
- Queue limits raise their usual 429 APIErrors; a prompt the engine cannot run, its 400.
- `await release(state, owner)` unpins; the blocks stay cached as ordinary entries.
- `ttl_s` (None: until released) is kept per owner; `await sweep(state)` releases every owner
  whose time has passed by `state.wall_clock` (injectable), and `retain` and the routes built
  on it sweep first, so an expired pin never holds budget from a new one.
- `extend(state, owner, ttl_s)` sets a new deadline from now; `expires_at(state, owner)` reads it.

Expiry and the owner table are this process's; what must outlive a restart or be seen by
another replica is a record (`core/records.py`) from which the owner retains again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, replace

import anyio
from starlette.concurrency import run_in_threadpool

from promptcache.engine.api import CacheOptions, Request, SamplingParams
from promptcache.server.core.records import Record, RecordStore, record_store
from promptcache.server.engine_loop import EngineFailure, QueueFullError, TenantLimitError
from promptcache.server.errors import APIError, queue_full, server_error, tenant_limit
from promptcache.server.state import ServerState

log = logging.getLogger("promptcache.server")


@dataclass(frozen=True)
class Retained:
    owner: str
    tenant: str
    prompt_tokens: int  # the prefix's length
    cached_tokens: int  # of which pinned now: whole blocks
    expires_at: float | None  # wall clock; None: until released


class Leases:
    """owner -> (tenant, deadline) of the prefixes this process retains; `restored` is set once
    the start-up restore (`--restore-retained`) is over."""

    def __init__(self) -> None:
        self._deadlines: dict[str, tuple[str, float | None]] = {}
        self._lock = threading.Lock()
        self.restored = threading.Event()

    def set(self, owner: str, tenant: str, expires_at: float | None) -> None:
        with self._lock:
            self._deadlines[owner] = (tenant, expires_at)

    def get(self, owner: str) -> tuple[str, float | None] | None:
        with self._lock:
            return self._deadlines.get(owner)

    def pop(self, owner: str) -> None:
        with self._lock:
            self._deadlines.pop(owner, None)

    def due(self, now: float) -> list[str]:
        with self._lock:
            return [o for o, (_, at) in self._deadlines.items() if at is not None and at <= now]


def leases(state: ServerState) -> Leases:
    if state.retention is None:
        state.retention = Leases()
    return state.retention


def records(state: ServerState) -> RecordStore:
    """The server's record store, made on first use; it reads the state's wall clock at each
    call, so a test that swaps `state.wall_clock` moves records and pins together."""
    if state.records is None:
        state.records = record_store(state.settings, clock=lambda: state.wall_clock())
    return state.records


async def sweep(state: ServerState) -> list[str]:
    """Release every owner whose deadline has passed; returns them."""
    due = leases(state).due(state.wall_clock())
    for owner in due:
        await release(state, owner)
    return due


def deadline(state: ServerState, ttl_s: float | None) -> float | None:
    return None if ttl_s is None else state.wall_clock() + ttl_s


async def retain(state: ServerState, tokens: list[int], *, tenant: str, salt: str | None, ttl_s: float | None,
                 owner: str, http_id: str = "retain") -> Retained:
    """Prefill (if needed) and pin `tokens` for `owner`; see the module's contract."""
    await sweep(state)
    request = Request(request_id=f"retain-{uuid.uuid4().hex}", prompt_tokens=list(tokens),
                      sampling=SamplingParams(max_tokens=1, temperature=0.0),
                      cache=CacheOptions(tenant=tenant, salt=salt, pin_owner=owner))
    # Admission: PinBudgetExceeded before any KV exists.
    await run_in_threadpool(state.engine.reserve_retained, request)
    try:
        sub = state.loop.submit(request)
    except TenantLimitError as err:
        state.engine.retained.settle(request.request_id)
        raise tenant_limit(err.limit, err.retry_after_s) from None
    except BaseException as err:
        state.engine.retained.settle(request.request_id)
        if isinstance(err, QueueFullError):
            raise queue_full(state.loop.max_queue) from None
        raise
    try:
        while True:
            item = await sub.queue.get()
            if isinstance(item, EngineFailure) or (item.finished and item.finish_reason == "error"):
                raise server_error(http_id, code="engine_failure", status=503)
            if item.finished:
                break
    finally:
        state.loop.abort(sub.request_id)  # a no-op once finished; frees the slot if cancelled
    expires_at = deadline(state, ttl_s)
    leases(state).set(owner, tenant, expires_at)
    blocks = await run_in_threadpool(state.engine.retained_blocks, owner)  # after the pinning save ran
    return Retained(owner, tenant, len(tokens), blocks * state.settings.block_size, expires_at)


async def release(state: ServerState, owner: str) -> int:
    """Unpin `owner`'s prefix (its blocks become ordinary cache entries); returns blocks."""
    leases(state).pop(owner)
    return await run_in_threadpool(state.engine.release_retained, owner)


def extend(state: ServerState, owner: str, ttl_s: float | None) -> float | None:
    """A new deadline, `ttl_s` from now (None: until released); returns it."""
    lease = leases(state).get(owner)
    expires_at = deadline(state, ttl_s)
    if lease is not None:
        leases(state).set(owner, lease[0], expires_at)
    return expires_at


async def restore(state: ServerState, owner: str, *, tenant: str, tokens: list[int], salt: str | None,
                  expires_at: float | None) -> None:
    """Retain again, for the time it has left, a recorded prefix this process holds no pin for
    (after a restart, or on another replica over the same records); the disk/Redis tiers, when
    configured, supply its KV instead of a prefill."""
    if tokens and await retained_tokens(state, owner) == 0:
        left = None if expires_at is None else max(1e-3, expires_at - state.wall_clock())
        await retain(state, tokens, tenant=tenant, salt=salt, ttl_s=left, owner=owner)


RETAINED_KINDS = ("pin", "session", "cached_content")


def record_cap(state: ServerState) -> int:
    """Records one tenant may hold of each kind (`max_records_per_tenant`): a prefix shorter
    than a block pins nothing, so the pin budget alone would not bound how many it can create."""
    return state.settings.limits.max_records_per_tenant


def too_many(state: ServerState, what: str) -> APIError:
    return APIError(429, f"this tenant already holds {record_cap(state)} {what}, the limit; delete some first",
                    code="too_many_records")


async def retain_record(state: ServerState, record: Record, tokens: list[int], *, salt: str | None,
                        ttl_s: float | None, what: str, http_id: str) -> tuple[Record | None, Retained]:
    """Retain `tokens` for `record.data["owner"]` and keep `record` for it. The record takes its
    place under the tenant's cap first, counted and inserted in one step (a 429 when the cap is
    reached), so concurrent creations cannot all pass one count; then the prefix is computed
    and pinned; then the record is written with its deadline, only if it still exists. A record
    deleted meanwhile has its pin released and comes back None; one whose prefix failed is
    removed (unless it was there before: pinning the same prefix again)."""
    store, owner = records(state), record.data["owner"]
    existed = await run_in_threadpool(store.get, record.kind, record.tenant, record.id) is not None
    if not await run_in_threadpool(store.add, record, record_cap(state)):
        raise too_many(state, what)
    try:
        kept = await retain(state, tokens, tenant=record.tenant, salt=salt, ttl_s=ttl_s, owner=owner,
                            http_id=http_id)
    except BaseException:
        if not existed:
            with anyio.CancelScope(shield=True):  # a client that went away leaves no record behind
                await run_in_threadpool(store.delete, record.kind, record.tenant, record.id)
        raise
    done = replace(record, expires_at=kept.expires_at)
    if not await run_in_threadpool(store.update, done):  # deleted while its prefix was computed
        await release(state, owner)
        return None, kept
    return done, kept


async def held_record(state: ServerState, kind: str, tenant: str, record_id: str, owner: str,
                      missing: APIError) -> Record:
    """The tenant's live record of `kind`, its prefix retained for `owner` in this process
    (again, after a restart or on another replica). `missing` is raised for an unknown, expired
    or other tenant's id, and for one deleted while its prefix was being restored; either way
    no pin is left held here (a pin restored for a deleted record would hold budget until the
    record's deadline)."""
    await sweep(state)
    store = records(state)
    record = await run_in_threadpool(store.get, kind, tenant, record_id)
    if record is not None:
        await restore(state, owner, tenant=tenant, tokens=record.data["tokens"], salt=record.data.get("salt"),
                      expires_at=record.expires_at)
        if await run_in_threadpool(store.get, kind, tenant, record_id) is not None:
            return record
    await release(state, owner)  # deleted or expired, maybe through another replica
    raise missing


def start_restore(state: ServerState) -> asyncio.Task:
    """`restore_records` in the background: the server answers while it runs."""
    return asyncio.get_running_loop().create_task(restore_records(state))


async def restore_records(state: ServerState) -> int:
    """Re-pin the live recorded prefixes of this engine's model (`data["model_id"]`) whose
    tenant this server knows (`--restore-retained`), one at a time, at most `record_cap` of
    each kind per tenant (in id order; a store written before the cap held more), and set
    `leases(state).restored` when done; returns how many. One that no longer fits its budget is
    logged and skipped. Started in the background (`start_restore`): a session or cached
    content asked for before its turn is re-pinned on first use, as without the option."""
    try:
        return await _restore(state)
    finally:
        leases(state).restored.set()


async def _restore(state: ServerState) -> int:
    known = {t.name for t in state.keys.tenants} or {"default"}
    restored, skipped, cap = 0, 0, record_cap(state)
    for kind in RETAINED_KINDS:
        taken: Counter[str] = Counter()
        for record in await run_in_threadpool(records(state).every, kind):
            data = record.data
            if data.get("model_id") != state.engine.model_id or record.tenant not in known or "owner" not in data:
                continue
            taken[record.tenant] += 1
            if taken[record.tenant] > cap:
                skipped += 1
                continue
            try:
                await restore(state, data["owner"], tenant=record.tenant, tokens=data["tokens"],
                              salt=data.get("salt"), expires_at=record.expires_at)
                restored += 1
            except Exception as exc:  # noqa: BLE001 - one prefix that cannot be kept stops no other
                log.warning("not re-pinning %s %s of tenant %s: %s", kind, json.dumps(record.id),
                            json.dumps(record.tenant), type(exc).__name__)
    left = f" ({skipped} over the record cap left)" if skipped else ""
    log.info("re-pinned %d recorded prefixes%s", restored, left)
    return restored


async def retained_tokens(state: ServerState, owner: str) -> int:
    """Tokens `owner` keeps pinned in this process now (0 once released, or after a restart)."""
    return await run_in_threadpool(state.engine.retained_blocks, owner) * state.settings.block_size

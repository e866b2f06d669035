"""The ingress: the single server's HTTP app, with its engine loop replaced by the replicas.

`create_app` is the single server's, unchanged: every dialect, the limits, auth, rendering and
tokenizing run here exactly as in one process (one tokenizer, one chat template), so the block
keys the router sees are the keys the replicas compute. Two pieces stand in for the engine:

- `ClusterEngine` answers what the routes ask an engine (tokenizer, model name, context
  length, grammar compiles, validation) from the model's metadata (no weights are loaded here)
  and from what a replica reported about itself (`EngineReplica.describe`). What reads or
  changes a replica's cache (flush, stats, explain, pins, sessions' and cached contents'
  prefixes) goes to one replica or to each, as `per_replica.py` says.
- `RoutedLoop` is an `EngineLoop` whose requests go to the replicas through the Ray Serve
  handle instead of to a local engine: the ticket (block keys with the exported key scheme,
  affinity ids) rides along for the router, the replica's deltas are handed to the route's
  queue as a local engine's are, and an abort (client gone) cancels the stream, which Ray
  Serve turns into a cancellation on the replica.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from types import SimpleNamespace

from promptcache.cache.divergence import Divergence
from promptcache.cache.keys import Namespace, block_keys
from promptcache.engine.api import Request
from promptcache.engine.engine import Engine
from promptcache.engine.structured.compiler import GrammarCompiler
from promptcache.scaleout.book import RouterBook, Ticket, key64
from promptcache.scaleout.hints import current_ids
from promptcache.scaleout.per_replica import ReplicaOps, combine_stats, everywhere, explain_key
from promptcache.scaleout.replica import HeldPath, Refused, ShippedGrammar
from promptcache.scaleout.shared import ClusterTenantLimit, SharedBlocks
from promptcache.server.core.usage import reusable_prefix
from promptcache.server.engine_loop import EngineFailure, EngineLoop, TenantLimitError, RETRY_AFTER_S
from promptcache.server.errors import APIError

log = logging.getLogger("promptcache.scaleout")


class _ShippingCompiler:
    """Compiles here (a bad spec is a 400 before any replica sees it) and ships the spec."""

    def __init__(self, compiler: GrammarCompiler):
        self.compiler = compiler

    def compile(self, spec) -> ShippedGrammar:
        return ShippedGrammar(spec, tuple(self.compiler.compile(spec).warnings))


def _no_replica(why: str) -> APIError:
    return APIError(503, f"{why}; try again", code="engine_failure", type="server_error")


class RemotePins:
    """`engine.retained` as the routes use it: a reservation dropped on its replica, and the path
    an owner holds as the ingress last heard it (per_replica.py), read without waiting."""

    def __init__(self, engine: ClusterEngine):
        self.engine = engine

    def settle(self, request_id: str) -> None:
        targets, _ = self.engine.targets.pop(request_id, ((), None))
        for replica in targets:  # not waited for: called on the event loop
            self.engine.ops.tell(replica, "settle", request_id)

    def held(self, owner: str) -> HeldPath | None:
        return self.engine.ops.held.get(owner)


class ClusterEngine:
    """The engine as the routes see it, in front of the replicas. What reads or changes a
    replica's cache spreads over the replicas as `per_replica.py` says."""

    prefix = None  # no cache in this process

    def __init__(self, source, info: dict):
        self.tokenizer = source.tokenizer
        self.model_name = info["model_name"]
        self.model_id = info["model_id"]
        self.context_length = info["context_length"]
        self.block_size = info["block_size"]
        self.model = SimpleNamespace(config=replace(source.config, vocab_size=info["vocab_size"]))
        self.grammars = _ShippingCompiler(GrammarCompiler(source.tokenizer, vocab_size=info["vocab_size"]))
        self.loop: RoutedLoop | None = None
        self.ops: ReplicaOps | None = None
        self.retained = RemotePins(self)
        self.targets: dict[str, tuple[tuple[str, ...], int | None]] = {}  # request id -> reserved on, predicted

    validate = Engine.validate  # the engine's own checks: the same 400s as a single server

    def add_request(self, request: Request) -> None:
        self.validate(request)
        self.loop.send(request)

    def abort_request(self, request_id: str) -> None:
        self.loop.cancel(request_id)

    def has_unfinished(self) -> bool:
        return False  # nothing to step here: the replicas step their engines

    def num_waiting(self) -> int:
        return self.loop.waiting if self.loop is not None else 0

    def num_running(self) -> int:
        return self.loop.running if self.loop is not None else 0

    def cache_stats(self, wait: bool = True) -> dict:
        """Every replica's figures, combined (admin); a metrics scrape (wait=False) asks none:
        the router's per-replica series are on /metrics."""
        return combine_stats(self.ops.everywhere("cache_stats")) if wait else {}

    def flush_cache(self, tenant: str | None = None, include_pinned: bool = False) -> int:
        if include_pinned:
            self.ops.held.clear()
        return sum(self.ops.everywhere("flush_cache", tenant, include_pinned).values())

    def _ranked(self, ticket: Ticket) -> tuple[tuple[str, ...], dict[str, int]]:
        roster = self.ops.book.roster()
        if not roster:
            raise _no_replica("no replica is running")
        decision = self.ops.book.decide(roster, ticket)
        return decision.order, decision.predicted

    def reserve_retained(self, request: Request) -> int:
        """Admit a prefix to retain: on every replica for an admin pin or a warm prompt, else on
        the replica the router picks for it (the request then goes there). Raises the replicas'
        PinBudgetExceeded."""
        if everywhere(request.cache.pin_owner):
            try:
                reserved = self.ops.everywhere("reserve_retained", request)
            except BaseException:
                self.ops.everywhere("settle", request.request_id)
                raise
            self.targets[request.request_id] = (tuple(reserved), None)
            return max(reserved.values(), default=0)
        order, predicted = self._ranked(self.loop.ticket(request))
        for replica in order:
            reserved = self.ops.on([replica], "reserve_retained", request)
            if replica in reserved:
                self.targets[request.request_id] = ((replica,), predicted[replica])
                return reserved[replica]
        raise _no_replica("no replica answered")

    def retained_blocks(self, owner: str) -> int:
        return self.ops.retained_blocks(owner)

    def release_retained(self, owner: str) -> int:
        return self.ops.release_retained(owner)

    def explain_prefix(self, tokens: list[int], options) -> tuple[int, Divergence | None]:
        """Asked of the replica the router would send this prompt to (a decision not counted as
        a request); `explained_by` names it."""
        ticket = self.loop.ticket_for(f"explain-{uuid.uuid4().hex}", tokens, options)
        for replica in self._ranked(ticket)[0]:
            answered = self.ops.on([replica], "explain_prefix", tokens, options)
            if replica in answered:
                self.ops.explained_at(tokens, options, replica)
                return answered[replica]
        raise _no_replica("no replica answered")

    def explain_tiers(self, tokens: list[int], options, held: int) -> dict[str, int]:
        replica = self.explained_by(tokens, options)
        answered = self.ops.on([replica], "explain_tiers", tokens, options, held) if replica else {}
        return answered.get(replica, {})

    def explained_by(self, tokens: list[int], options) -> str | None:
        """The replica that answered the last explain of this prompt in this namespace."""
        return self.ops.explained.get(explain_key(tokens, options))


class RoutedLoop(EngineLoop):
    """EngineLoop's admission, tenant limits and delivery, with the replicas as the engine."""

    def __init__(self, engine: ClusterEngine, handle, book: RouterBook, *, max_queue: int,
                 max_per_tenant: int | None, shared: SharedBlocks | None = None,
                 cluster_limit: ClusterTenantLimit | None = None):
        super().__init__(engine, max_queue=max_queue, max_per_tenant=max_per_tenant)
        engine.loop = self
        engine.ops = ReplicaOps(handle, book)
        self.handle = handle.options(stream=True)
        self.book = book
        self.shared = shared
        self.cluster_limit = cluster_limit
        self._tasks: dict[str, asyncio.Task] = {}
        self._started: set[str] = set()
        self._slots: dict[str, tuple[str, str]] = {}

    @property
    def waiting(self) -> int:
        return len(self._tasks) - len(self._started)

    @property
    def running(self) -> int:
        return len(self._started)

    def submit(self, request: Request):
        slot = None
        if self.cluster_limit is not None:
            slot = self.cluster_limit.acquire(request.cache.tenant)
            if slot is None:
                raise TenantLimitError(request.cache.tenant, self.cluster_limit.limit, RETRY_AFTER_S)
        try:
            sub = super().submit(request)
        except BaseException:
            if slot is not None:
                self.cluster_limit.release(request.cache.tenant, slot)
            raise
        if slot is not None:
            self._slots[request.request_id] = (request.cache.tenant, slot)
        return sub

    def ticket_for(self, request_id: str, tokens: list[int], options) -> Ticket:
        """What the router needs of a prompt: its block keys (the exported key scheme), size and
        the ids that name where its state lives."""
        engine = self.engine
        keys: list[bytes] = []
        if options.enabled:
            keys = block_keys(tokens, engine.block_size, Namespace(engine.model_id, options.tenant, options.salt))
        affinity = current_ids()
        if options.cache_key:
            affinity.append(("cache_key", options.cache_key))
        if options.pin_owner is not None and not everywhere(options.pin_owner):  # a session's turn
            affinity.append(("owner", options.pin_owner))
        if request_id.startswith("resp_"):  # a later previous_response_id finds it here
            affinity.append(("response", request_id))
        return Ticket(request_id, options.tenant, engine.model_id, tuple(key64(k) for k in keys),
                      len(tokens), reusable_prefix(len(tokens), engine.block_size) // engine.block_size,
                      affinity=tuple(affinity), full_keys=keys, source=self.book.source)

    def ticket(self, request: Request) -> Ticket:
        return self.ticket_for(request.request_id, request.prompt_tokens, request.cache)

    def send(self, request: Request) -> None:
        """Start streaming `request` from a replica (its grammar, if any, is a ShippedGrammar:
        `ClusterEngine.grammars` made it). A prefix reserved on replicas runs on each of them;
        the first one's reply is the request's."""
        ticket = self.ticket(request)
        targets, predicted = self.engine.targets.pop(request.request_id, ((), None))
        others = []
        if targets:
            ticket.target, ticket.predicted = targets[0], predicted
            for replica in targets[1:]:
                other = replace(ticket, request_id=f"{request.request_id}@{replica}", target=replica, affinity=())
                others.append(asyncio.get_running_loop().create_task(self._drain(request, other)))
        task = asyncio.get_running_loop().create_task(self._pump(request, ticket, others))
        self._tasks[request.request_id] = task

    async def _drain(self, request: Request, ticket: Ticket) -> None:
        """Run `request` on another replica for its pin alone; its reply is dropped."""
        stream = self.handle.generate.remote(request, ticket)
        try:
            async for item in stream:
                if isinstance(item, HeldPath):
                    self.engine.ops.remember(item)
        except asyncio.CancelledError:
            stream.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - that replica holds no pin; retained_blocks shows it
            log.warning("pinning %s on replica %s failed: %s", request.request_id, ticket.target, type(exc).__name__)
        finally:
            self.book.finished(ticket, None)

    def cancel(self, request_id: str) -> None:
        task = self._tasks.get(request_id)
        if task is not None:
            task.cancel()

    async def _pump(self, request: Request, ticket: Ticket, others: list[asyncio.Task] = ()) -> None:
        stream = None
        finished = False
        try:
            if self.shared is not None and ticket.full_keys and ticket.usable_blocks:
                ticket.shared_blocks = await asyncio.to_thread(self.shared.leading,
                                                               ticket.full_keys[:ticket.usable_blocks])
            stream = self.handle.generate.remote(request, ticket)
            async for item in stream:
                if isinstance(item, str):  # the replica names itself first
                    if item != ticket.replica:  # Ray Serve chose another than the router's first
                        self.book.routed(ticket, item, None)
                    continue
                if isinstance(item, HeldPath):  # what the request's pin owner holds there now
                    self.engine.ops.remember(item, ticket.replica)
                    continue
                if isinstance(item, Refused):  # the replica's engine refused it at submit: a 4xx
                    self.fail(request.request_id, item.error)
                    return
                if request.request_id not in self._started:
                    self._started.add(request.request_id)
                    self.book.started(ticket)
                if item.finished:
                    if others:  # pinned on every replica before the request counts as done
                        await asyncio.gather(*others)
                    finished = True
                    self.book.finished(ticket, item.num_cached_tokens)
                self._dispatch([item])
        except asyncio.CancelledError:
            if stream is not None:
                stream.cancel()
            for other in others:
                other.cancel()
            raise
        except Exception as exc:  # the replica died or failed: this request alone fails
            log.warning("request %s failed on replica %s: %s", request.request_id, ticket.replica or "?",
                        type(exc).__name__)
            self.fail(request.request_id)
        finally:
            if not finished:
                self.book.finished(ticket, None)
            self._tasks.pop(request.request_id, None)
            self._started.discard(request.request_id)
            self._release_slot(request.request_id)

    def _release_slot(self, request_id: str) -> None:
        held = self._slots.pop(request_id, None)
        if held is not None:
            self.cluster_limit.release(*held)

    def fail(self, request_id: str, refusal: Exception | None = None) -> None:
        """Tell this request's route that it failed (503, or the replica engine's `refusal`
        of it, e.g. a 409 pin budget), and forget it."""
        with self._lock:
            entry = self._forget(request_id)
        if entry is not None:
            self._deliver(entry, EngineFailure("the replica serving this request failed", refusal))

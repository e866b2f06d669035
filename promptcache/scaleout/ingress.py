"""The ingress: the single server's HTTP app, with its engine loop replaced by the replicas.

`create_app` is the single server's, unchanged: every dialect, the limits, auth, rendering and
tokenizing run here exactly as in one process (one tokenizer, one chat template), so the block
keys the router sees are the keys the replicas compute. Two pieces stand in for the engine:

- `ClusterEngine` answers what the routes ask an engine (tokenizer, model name, context
  length, grammar compiles, validation) from the model's metadata (no weights are loaded here)
  and from what a replica reported about itself (`EngineReplica.describe`).
- `RoutedLoop` is an `EngineLoop` whose requests go to the replicas through the Ray Serve
  handle instead of to a local engine: the ticket (block keys with the exported key scheme,
  affinity ids) rides along for the router, the replica's deltas are handed to the route's
  queue as a local engine's are, and an abort (client gone) cancels the stream, which Ray
  Serve turns into a cancellation on the replica.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from types import SimpleNamespace

from promptcache.cache.keys import Namespace, block_keys
from promptcache.engine.api import Request
from promptcache.engine.engine import Engine
from promptcache.engine.structured.compiler import GrammarCompiler
from promptcache.scaleout.book import RouterBook, Ticket, key64
from promptcache.scaleout.hints import current_ids
from promptcache.scaleout.replica import ShippedGrammar
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


class ClusterEngine:
    """The engine as the routes see it, in front of the replicas."""

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
        return {}  # each replica's cache is its own; the router's view is in /metrics

    def _per_replica(self, *args, **kwargs):
        raise APIError(501, "this reads or changes one engine's cache, and each replica has its own: "
                            "not available through the scale-out ingress yet (docs/deployment.md)",
                       code="not_implemented")

    # Cache administration, pins (sessions, cached contents) and /v1/cache/explain: 501.
    flush_cache = pin_prefix = unpin_prefix = reserve_retained = explain_prefix = _per_replica

    def retained_blocks(self, owner: str) -> int:
        return 0  # nothing is pinned in this process

    def release_retained(self, owner: str) -> int:
        return 0


class RoutedLoop(EngineLoop):
    """EngineLoop's admission, tenant limits and delivery, with the replicas as the engine."""

    def __init__(self, engine: ClusterEngine, handle, book: RouterBook, *, max_queue: int,
                 max_per_tenant: int | None, shared: SharedBlocks | None = None,
                 cluster_limit: ClusterTenantLimit | None = None):
        super().__init__(engine, max_queue=max_queue, max_per_tenant=max_per_tenant)
        engine.loop = self
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

    def ticket(self, request: Request) -> Ticket:
        engine, tokens, options = self.engine, request.prompt_tokens, request.cache
        keys: list[bytes] = []
        if options.enabled:
            keys = block_keys(tokens, engine.block_size, Namespace(engine.model_id, options.tenant, options.salt))
        affinity = current_ids()
        if options.cache_key:
            affinity.append(("cache_key", options.cache_key))
        if request.request_id.startswith("resp_"):  # a later previous_response_id finds it here
            affinity.append(("response", request.request_id))
        return Ticket(request.request_id, options.tenant, engine.model_id, tuple(key64(k) for k in keys),
                      len(tokens), reusable_prefix(len(tokens), engine.block_size) // engine.block_size,
                      affinity=tuple(affinity), full_keys=keys)

    def send(self, request: Request) -> None:
        """Start streaming `request` from a replica (its grammar, if any, is a ShippedGrammar:
        `ClusterEngine.grammars` made it)."""
        task = asyncio.get_running_loop().create_task(self._pump(request, self.ticket(request)))
        self._tasks[request.request_id] = task

    def cancel(self, request_id: str) -> None:
        task = self._tasks.get(request_id)
        if task is not None:
            task.cancel()

    async def _pump(self, request: Request, ticket: Ticket) -> None:
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
                if request.request_id not in self._started:
                    self._started.add(request.request_id)
                    self.book.started(ticket)
                if item.finished:
                    finished = True
                    self.book.finished(ticket, item.num_cached_tokens)
                self._dispatch([item])
        except asyncio.CancelledError:
            if stream is not None:
                stream.cancel()
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

    def fail(self, request_id: str) -> None:
        """Tell this request's route that it failed (503), and forget it."""
        with self._lock:
            entry = self._forget(request_id)
        if entry is not None:
            self._deliver(entry, EngineFailure("the replica serving this request failed"))

"""One engine replica: the engine and its stepping loop, served to the ingress through Ray Serve.

The replica runs the same `EngineLoop` as a single server, so batching, admission and aborts
are the single server's. It takes engine `Request`s that the ingress has already rendered,
tokenized and validated, and streams back `RequestOutput` deltas. When the caller goes away
(the HTTP client disconnected and the ingress cancelled its stream) Ray Serve cancels the
generator here, and the request is aborted in the engine at its next step.

`record_routing_stats` is Ray Serve's hook for the router's data: the block-key summary
(`summary.py`), run off the event loop since it waits for the engine's lock.

`admin` runs one operation on this replica's own cache for the ingress (`per_replica.py`):
flush, stats, explain, and the reservation, lookup and release of retained prefixes. A ticket
that targets another replica (that one is gone, and Ray Serve sent the call here) is answered
with `NotTarget`, never run here. A request that pins a prefix (a session's turn) sends the
path its owner holds before its last delta, so the ingress knows it without asking.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from promptcache.cache.errors import PinBudgetExceeded
from promptcache.engine.api import EngineInputError, Request, RequestOutput
from promptcache.engine.structured.spec import StructureSpec
from promptcache.scaleout.book import Ticket
from promptcache.scaleout.summary import KeySummary
from promptcache.server.engine_loop import EngineFailure, EngineLoop
from promptcache.server.settings import ServerSettings

log = logging.getLogger("promptcache.scaleout.replica")


class ReplicaFailure(RuntimeError):
    """The replica's engine failed this request (the replica itself is still serving)."""


@dataclass(frozen=True)
class ShippedGrammar:
    """An output constraint on its way to a replica: the spec, compiled again there (compiled
    grammars do not cross processes). The ingress compiled it once already, so a bad spec was
    refused with a 400 before it got here; `warnings` are the ingress's compile's."""

    spec: StructureSpec
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeldPath:
    """What a pin owner holds on a replica: its pinned tokens (whole blocks) and their count."""

    owner: str
    tokens: tuple[int, ...]
    blocks: int


@dataclass(frozen=True)
class Answer:
    """`admin`'s reply: which replica ran the operation, and its result or its refusal (an
    exception of the engine's, e.g. PinBudgetExceeded, raised again at the ingress)."""

    replica: str
    result: object = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Refused:
    """`generate`'s only item when the engine refused the request at submit (a session turn past
    its pin budget): the ingress raises `error` in the route, as a single server would."""

    replica: str
    error: BaseException


@dataclass(frozen=True)
class NotTarget:
    """The call targeted another replica (gone): nothing ran here."""

    replica: str


# The engine's refusals of one request or operation: the caller's fault, answered 4xx at the ingress.
REFUSALS = (PinBudgetExceeded, EngineInputError)

ADMIN_OPS = frozenset({"flush_cache", "cache_stats", "explain_prefix", "explain_tiers", "reserve_retained",
                       "settle", "held", "release_retained"})


class EngineReplica:
    def __init__(self, settings: ServerSettings, threads: int | None = None):
        import torch

        from promptcache.server.app import engine_from_settings
        from promptcache.server.logs import configure_logging

        configure_logging(settings.log_level, settings.log_format)
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.engine = engine_from_settings(settings)
        if settings.tier_config().enabled:
            from promptcache.tiers.config import build_tiers

            self.engine.attach_tiers(build_tiers(settings.tier_config(), self.engine.prefix.block_size))
        self.settings = settings
        self.loop = EngineLoop(self.engine, max_queue=settings.max_queue)
        self.loop.start()
        self.summary = KeySummary(self.engine)
        self.aborted = 0
        self.sources: dict[str, str] = {}  # request id -> the ingress that sent it (Ticket.source)
        try:
            from ray import serve

            self.replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - constructed outside Ray Serve (tests of this class)
            self.replica_id = self.summary.epoch

    def describe(self) -> dict:
        """What the ingress must agree on with the replicas: the cache namespace and limits."""
        engine = self.engine
        return dict(model_id=engine.model_id, model_name=engine.model_name, context_length=engine.context_length,
                    vocab_size=engine.model.config.vocab_size, block_size=self.settings.block_size,
                    threads=self.threads, cpus=self._cpus())

    @staticmethod
    def _cpus() -> float | None:
        """The CPUs Ray reserved for this replica (None outside Ray)."""
        try:
            import ray

            return ray.get_runtime_context().get_assigned_resources().get("CPU")
        except Exception:  # noqa: BLE001 - constructed outside Ray (tests of this class)
            return None

    def in_flight(self) -> int:
        return self.loop.in_flight

    async def record_routing_stats(self) -> dict:
        return await asyncio.to_thread(self.summary.report, self.aborted, self.sources)

    def _held(self, owner: str) -> HeldPath:
        blocks = self.engine.retained_blocks(owner)  # runs the pending saves: a finished turn's pin counts
        held = self.engine.retained.held(owner) if self.engine.retained is not None else None
        return HeldPath(owner, tuple(held.tokens) if held is not None else (), blocks)

    def _run_admin(self, op: str, args: tuple):
        engine = self.engine
        if op == "settle":
            return engine.retained.settle(*args) if engine.retained is not None else None
        if op == "held":
            return self._held(*args)
        if op == "cache_stats":
            return engine.cache_stats(wait=True)
        return getattr(engine, op)(*args)

    async def admin(self, ticket: Ticket, op: str, *args) -> Answer | NotTarget:
        """Run `op` (one of ADMIN_OPS) on this replica's engine, off the event loop (it takes
        the engine's lock). Refusals the server answers with a 4xx travel back as `error`."""
        if ticket.target is not None and ticket.target != self.replica_id:
            return NotTarget(self.replica_id)
        if op not in ADMIN_OPS:
            raise ValueError(f"not a replica operation: {op}")
        try:
            return Answer(self.replica_id, await asyncio.to_thread(self._run_admin, op, args))
        except REFUSALS as exc:
            return Answer(self.replica_id, error=exc)

    async def generate(self, request: Request, ticket: Ticket | None = None) -> AsyncIterator[RequestOutput]:
        if isinstance(request.structure, ShippedGrammar):
            request.structure = await asyncio.to_thread(self.engine.grammars.compile, request.structure.spec)
        try:
            sub = self.loop.submit(request)
        except REFUSALS as exc:  # this request's fault: the ingress answers 4xx
            yield Refused(self.replica_id, exc)
            return
        self.sources[request.request_id] = ticket.source if ticket is not None else ""
        finished = False
        try:
            yield self.replica_id  # first: the router learns where the request landed
            while not finished:
                item = await sub.queue.get()
                if isinstance(item, EngineFailure):
                    raise ReplicaFailure(str(item))
                finished = item.finished
                if finished and request.cache.pin_owner is not None:  # the owner's path, before the reply ends
                    yield await asyncio.to_thread(self._held, request.cache.pin_owner)
                yield item
        finally:
            self.sources.pop(request.request_id, None)
            if not finished:  # cancelled (the client went away) or failed: free the slot
                self.aborted += 1
                self.loop.abort(sub.request_id)

    def __del__(self):
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.stop(timeout=2.0)
            self.engine.close_tiers()

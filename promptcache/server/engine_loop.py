"""The bridge between the engine thread and asyncio: continuous batching for HTTP requests.

One background thread owns `engine.step()` (the engine requires a single stepping thread).
While any request is unfinished it steps without pause, so a request that arrives mid-batch
joins at the next step instead of waiting for the batch to drain; with nothing to do it sleeps
on an Event that `submit` sets. Each step's `RequestOutput`s are handed to the asyncio queue of
their request with `loop.call_soon_threadsafe`, the only thread-safe way into an event loop.

Ownership: the loop owns the request-id -> queue table; an entry leaves it when its request
finishes, is aborted, or the engine fails. Once it has left, late outputs are dropped.

Admission limits, checked in `submit` before the engine sees the request: at most `max_queue`
requests waiting for a slot (all tenants together), and at most `max_per_tenant` requests of one
tenant queued or running. The second is what keeps one tenant from filling the queue with long
generations: the others still get in, and the scheduler shares the slots between tenants (a
slot at the next step for a tenant below its share, engine/slot_shares.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from promptcache.engine.api import Request, RequestOutput

log = logging.getLogger("promptcache.server")


class QueueFullError(Exception):
    """More requests are waiting for a batch slot than the server accepts."""


class TenantLimitError(QueueFullError):
    """One tenant already has `limit` requests queued or running; it may retry later."""

    def __init__(self, tenant: str, limit: int, retry_after_s: int):
        super().__init__(f"tenant {tenant!r} has {limit} requests in flight")
        self.tenant = tenant
        self.limit = limit
        self.retry_after_s = retry_after_s


# What a tenant over its limit is told to wait (Retry-After is whole seconds): about one short
# reply's time on a CPU; a well-behaved client backs off further on repeated 429s.
RETRY_AFTER_S = 1


class EngineFailure(Exception):
    """The engine raised inside step(); delivered to every request that was in flight.

    `refusal`, when set, is the engine's own refusal of this one request, raised where a single
    server raises it at submit (PinBudgetExceeded, EngineInputError) but learnt later, e.g. from
    a scale-out replica: the route raises it, and its handler answers 4xx instead of 503."""

    def __init__(self, message: str = "", refusal: Exception | None = None):
        super().__init__(message)
        self.refusal = refusal


@dataclass
class Submission:
    """A handler's view of one in-flight request. `queue` receives RequestOutput deltas and,
    at most once, an EngineFailure (after which nothing else arrives)."""

    request_id: str
    queue: asyncio.Queue
    submitted_at: float
    first_token_at: float | None = None
    finished_at: float | None = None


class EngineLoop:
    def __init__(
        self,
        engine,
        *,
        max_queue: int,
        max_per_tenant: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        idle_wait_s: float = 1.0,
    ):
        self.engine = engine
        self.max_queue = max_queue
        self.max_per_tenant = max_per_tenant  # queued + running requests of one tenant; None: no limit
        self.clock = clock
        self._idle_wait_s = idle_wait_s
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._tenant_of: dict[str, str] = {}  # request id -> tenant, for the entries of _streams
        self._per_tenant: dict[str, int] = {}  # tenant -> its entries in _streams
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="promptcache-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop stepping; requests still in flight are aborted and told the server stopped."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._fail_all(EngineFailure("the server is shutting down"))

    # ---- called from the event loop --------------------------------------------------------

    def submit(self, request: Request) -> Submission:
        """Queue `request` for the engine. Raises QueueFullError (-> 429), TenantLimitError
        (-> 429 with Retry-After) when its tenant already has `max_per_tenant` requests queued
        or running, or the engine's EngineInputError (-> 400) for input it cannot run; nothing
        is left registered then."""
        if self.engine.num_waiting() >= self.max_queue:
            raise QueueFullError(self.max_queue)
        queue: asyncio.Queue = asyncio.Queue()
        tenant = request.cache.tenant
        with self._lock:
            held = self._per_tenant.get(tenant, 0)
            if self.max_per_tenant is not None and held >= self.max_per_tenant:
                raise TenantLimitError(tenant, self.max_per_tenant, RETRY_AFTER_S)
            # Registered before add_request: the engine thread may emit the first output
            # before add_request even returns.
            self._streams[request.request_id] = (asyncio.get_running_loop(), queue)
            self._tenant_of[request.request_id] = tenant
            self._per_tenant[tenant] = held + 1
        try:
            self.engine.add_request(request)
        except BaseException:
            with self._lock:
                self._forget(request.request_id)
            raise
        self._wake.set()
        return Submission(request.request_id, queue, self.clock())

    def abort(self, request_id: str) -> None:
        """Free the request's sequence at the next step (the client went away)."""
        with self._lock:
            known = self._forget(request_id) is not None
        if known:
            self.engine.abort_request(request_id)
            self._wake.set()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._streams)

    def in_flight_of(self, tenant: str) -> int:
        """Requests of `tenant` queued or running (what `max_per_tenant` bounds)."""
        with self._lock:
            return self._per_tenant.get(tenant, 0)

    def _forget(self, request_id: str) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue] | None:
        """Take a request's entry out of the table (the caller holds the lock)."""
        entry = self._streams.pop(request_id, None)
        tenant = self._tenant_of.pop(request_id, None)
        if tenant is not None:
            left = self._per_tenant[tenant] - 1
            if left:
                self._per_tenant[tenant] = left
            else:
                del self._per_tenant[tenant]
        return entry

    # ---- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self.engine.has_unfinished():
                # Clear before re-checking, so a submit between the check and the wait is
                # never lost: its set() lands after this clear and ends the wait at once.
                self._wake.wait(self._idle_wait_s)
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception:  # keep serving: fail this batch, not the server
                with self._lock:
                    ids = " ".join(self._streams)
                log.exception("engine step failed; failing the requests in flight: %s", ids or "none")
                # The class and text of `exc` stay in the log: a client is told only its request id.
                self._fail_all(EngineFailure("the engine failed"))
                self._stopping.wait(0.05)  # no hot loop if the engine keeps failing
                continue
            self._dispatch(outputs)

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            with self._lock:
                if out.finished:
                    entry = self._forget(out.request_id)
                else:
                    entry = self._streams.get(out.request_id)
            if entry is not None:
                self._deliver(entry, out)

    def _fail_all(self, failure: EngineFailure) -> None:
        with self._lock:
            entries = list(self._streams.items())
            self._streams.clear()
            self._tenant_of.clear()
            self._per_tenant.clear()
        for request_id, entry in entries:
            try:
                self.engine.abort_request(request_id)
            except Exception:  # the engine may be the thing that is broken
                log.debug("abort of %s after failure also failed", request_id, exc_info=True)
            self._deliver(entry, failure)

    @staticmethod
    def _deliver(entry: tuple[asyncio.AbstractEventLoop, asyncio.Queue], item: object) -> None:
        loop, queue = entry
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            pass

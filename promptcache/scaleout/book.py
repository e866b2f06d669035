"""What the router knows about the replicas, kept between decisions: pure Python, thread-safe.

Sources, each with its own lag:
- **Reports**: every replica sends, through Ray Serve's routing stats, the 64-bit prefixes of the
  block keys it holds in memory and on its local disk, with a generation number that advances
  at each report (`summary.py`). Exact when taken; a period old at worst.
- **Routed**: the blocks of each prompt this router sent to a replica, until the replica's own
  reports have had time to include them (`recent_ttl_s`). This is what covers a conversation's
  next turn arriving before the next report.
- **Load**: each replica reports the requests it holds and the work ahead of a new prompt
  there in tokens (`summary.work_ahead`), per ingress that sent them (the ticket's `source`,
  this book's random id). The load of a replica is what the other ingress processes have
  there, as of its last fresh report (a period old at worst), plus this router's own requests
  in flight, known exactly and at once: their uncached prompt tokens until the first token
  comes back, then `DECODE_TOKENS` each. So two ingress processes see each other's load, and
  a router's own finished request never lingers as load until the next report.
- **Checks**: per replica, whether the tokens it actually read from its cache matched what the
  router predicted. Three misses in the last four make its reports untrusted.

A replica with no report yet, a report older than `stale_after_s`, or disagreeing checks is
untrusted: the decision falls back to least-loaded and a warning names the replica and the
cause, once per change of state (never silently, never a log line per request).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from promptcache.scaleout.scoring import DECODE_TOKENS, Candidate, Decision, Weights, decide, leading_run

log = logging.getLogger("promptcache.scaleout.router")

CHECKS_KEPT = 4
CHECKS_TO_DISTRUST = 3
MAX_AFFINITY = 100_000


def key64(key: bytes) -> int:
    """The compact form of a 16-byte block key that reports and requests carry."""
    return int.from_bytes(key[:8], "little")


def pack_keys(keys: Iterable[int]) -> bytes:
    return array("Q", keys).tobytes()


def unpack_keys(raw: bytes) -> frozenset[int]:
    out = array("Q")
    out.frombytes(raw)
    return frozenset(out)


@dataclass(frozen=True)
class Report:
    """One replica's routing stats, parsed (`summary.py` writes them)."""

    epoch: str  # the replica process's random id: a restart starts a new generation count
    generation: int
    model_id: str
    keys: frozenset[int]
    waiting: int = 0  # the replica's engine, when it reported (every ingress's requests)
    running: int = 0
    aborted: int = 0  # requests cancelled by their caller so far
    load: tuple[tuple[str, int, int], ...] = ()  # (source, requests, tokens of work), per sending ingress

    def others(self, source: str) -> tuple[int, int]:
        """Requests and tokens of work the other ingress processes have on this replica."""
        rows = [(n, tokens) for src, n, tokens in self.load if src != source]
        return sum(n for n, _ in rows), sum(t for _, t in rows)

    @classmethod
    def parse(cls, stats: dict | None) -> Report | None:
        if not stats or "generation" not in stats:
            return None
        return cls(str(stats["epoch"]), int(stats["generation"]), str(stats["model_id"]),
                   unpack_keys(stats["keys"]), int(stats.get("waiting", 0)), int(stats.get("running", 0)),
                   int(stats.get("aborted", 0)),
                   tuple((str(src), int(n), int(t)) for src, (n, t) in stats.get("load", {}).items()))


@dataclass
class Ticket:
    """One request on its way to a replica: what the router needs, filled in as it is routed.
    Pickled for the replica without its keys (the replica hashes its own)."""

    request_id: str
    tenant: str = "default"
    model_id: str = ""
    keys: tuple[int, ...] = ()  # key64 of the prompt's full blocks, in order
    prompt_tokens: int = 0
    usable_blocks: int = 0  # the most leading blocks a replica can read (server/core/usage.py)
    shared_blocks: int = 0  # leading blocks the shared Redis tier holds
    affinity: tuple[tuple[str, str], ...] = ()  # (kind, id): session, response, cache_key
    replica: str | None = None
    predicted: int | None = None
    reason: str | None = None
    full_keys: list[bytes] = field(default_factory=list, repr=False)  # 16-byte keys, for the shared tier
    target: str | None = None  # this replica only, when it is live (per_replica.py); shipped, so it can check
    admin: bool = False  # an operation on the replica's cache, not a request: not counted as load
    source: str = ""  # the sending router's id (RouterBook.source), shipped: the replica reports load per source

    def __reduce__(self):
        return (Ticket, (self.request_id, self.tenant), {"target": self.target, "admin": self.admin,
                                                         "source": self.source})


@dataclass
class ReplicaBooks:
    report: Report | None = None
    seen_at: float = 0.0  # when its generation last advanced (this process's clock)
    recent: dict[int, float] = field(default_factory=dict)  # key64 -> until when it counts
    in_flight: dict[str, int] = field(default_factory=dict)  # request id -> tokens of work ahead (scoring.py)
    checks: deque = field(default_factory=lambda: deque(maxlen=CHECKS_KEPT))
    distrust: str | None = "no report yet"
    predicted_tokens: int = 0
    actual_tokens: int = 0
    finished: int = 0
    disagreements: int = 0


class _Held:
    def __init__(self, books: ReplicaBooks, model_id: str, now: float):
        report = books.report
        self.keys = report.keys if report is not None and report.model_id == model_id else frozenset()
        self.recent, self.now = books.recent, now

    def __contains__(self, key: int) -> bool:
        return key in self.keys or self.recent.get(key, 0.0) > self.now


def _affinity_key(tenant: str, kind: str, value: str) -> tuple[str, str, str]:
    """Ids are per tenant; a pin owner (kind "owner") names its tenant already, and is also
    pointed at from where no request, hence no tenant, is at hand (per_replica.py)."""
    return ("", kind, value) if kind == "owner" else (tenant, kind, value)


class RouterBook:
    def __init__(self, *, mode: str = "prefix", block_size: int = 16, weights: Weights = Weights(),
                 stale_after_s: float = 5.0, recent_ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.mode = mode
        self.block_size = block_size
        self.weights = weights
        self.stale_after_s = stale_after_s
        self.recent_ttl_s = recent_ttl_s
        self.source = uuid.uuid4().hex  # names this router's requests in the replicas' load reports
        self.clock = clock
        self.decisions: dict[str, int] = {}
        self.routes: deque[tuple[str, str, str]] = deque(maxlen=256)  # (request id, replica, reason), latest last
        self._replicas: dict[str, ReplicaBooks] = {}
        self._affinity: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._roster: tuple[str, ...] = ()
        self._turns = itertools.count()
        self._lock = threading.Lock()

    # ---- what the replicas say -------------------------------------------------------------

    def observe(self, replica: str, stats: dict | None) -> None:
        """Take in a replica's latest routing stats (the same dict again is a no-op)."""
        report = Report.parse(stats)
        with self._lock:
            books = self._replicas.setdefault(replica, ReplicaBooks())
            old = books.report
            if report is None or (old is not None and (old.epoch, old.generation) == (report.epoch, report.generation)):
                return
            books.report = report
            books.seen_at = self.clock()

    def set_roster(self, replicas: Iterable[str]) -> None:
        """The live replicas, as Ray Serve last told the router (its `update_replicas`)."""
        with self._lock:
            self._roster = tuple(sorted(replicas))

    def roster(self) -> tuple[str, ...]:
        with self._lock:
            return self._roster

    def forget(self, replica: str) -> None:
        """The replica is gone: its books and its affinities go with it."""
        with self._lock:
            self._replicas.pop(replica, None)
            self._roster = tuple(r for r in self._roster if r != replica)
            for key in [k for k, r in self._affinity.items() if r == replica]:
                del self._affinity[key]

    def _trust(self, replica: str, books: ReplicaBooks, now: float) -> bool:
        if books.report is None:
            why = "no report yet"
        elif now - books.seen_at > self.stale_after_s:
            why = f"its last report is {now - books.seen_at:.1f} s old"
        elif sum(1 for ok in books.checks if not ok) >= CHECKS_TO_DISTRUST:
            why = "its reports disagree with the cached tokens it served"
        else:
            why = None
        if why != books.distrust:
            if why is None:
                log.info("replica %s: reports trusted again; prefix routing resumes", replica)
            elif why != "no report yet":
                log.warning("replica %s: %s; routing least-loaded until it reports again", replica, why)
            books.distrust = why
        return why is None

    # ---- one request -----------------------------------------------------------------------

    def decide(self, replicas: Iterable[str], ticket: Ticket) -> Decision:
        now = self.clock()
        affinity = None
        with self._lock:
            candidates = []
            for replica in replicas:
                books = self._replicas.setdefault(replica, ReplicaBooks())
                usable = ticket.keys[:ticket.usable_blocks]
                requests, tokens = self._load(books, now)
                candidates.append(Candidate(replica, leading_run(usable, _Held(books, ticket.model_id, now)),
                                            requests, tokens, self._trust(replica, books, now)))
            for kind, value in ticket.affinity:
                affinity = self._affinity.get(_affinity_key(ticket.tenant, kind, value))
                if affinity is not None:
                    break
            turn = next(self._turns)
        decision = decide(candidates, mode=self.mode, prompt_tokens=ticket.prompt_tokens,
                          usable_blocks=ticket.usable_blocks, shared_blocks=ticket.shared_blocks,
                          block_size=self.block_size, turn=turn, affinity=affinity, weights=self.weights)
        ticket.reason = decision.reason
        with self._lock:
            self.decisions[decision.reason] = self.decisions.get(decision.reason, 0) + 1
        return decision

    def _load(self, books: ReplicaBooks, now: float) -> tuple[int, int]:
        """(requests, tokens of work) ahead on a replica: the other ingress processes' there, from
        its fresh report, plus this router's own in flight."""
        requests, tokens = len(books.in_flight), sum(books.in_flight.values())
        if books.report is not None and now - books.seen_at <= self.stale_after_s:
            others = books.report.others(self.source)
            requests, tokens = requests + others[0], tokens + others[1]
        return requests, tokens

    def routed(self, ticket: Ticket, replica: str, predicted: int | None) -> None:
        """`ticket` went to `replica`: its blocks will be there, it is in flight there, and its
        ids now point there. `predicted` None: not known for this replica (Ray Serve chose
        another than the router's first), so this request is not compared."""
        until = self.clock() + self.recent_ttl_s
        ticket.replica, ticket.predicted = replica, predicted
        with self._lock:
            for other in self._replicas.values():  # routed again (a retry): it is in flight once
                other.in_flight.pop(ticket.request_id, None)
            books = self._replicas.setdefault(replica, ReplicaBooks())
            if len(books.recent) > 4 * len(ticket.keys) + 1024:  # drop what has run out
                now = self.clock()
                books.recent = {k: t for k, t in books.recent.items() if t > now}
            for key in ticket.keys:
                books.recent[key] = until
            books.in_flight[ticket.request_id] = ticket.prompt_tokens - (predicted or 0)  # prefill to run
            self.routes.append((ticket.request_id, replica, ticket.reason or "none"))
            for kind, value in ticket.affinity:
                self._point(ticket.tenant, kind, value, replica)

    def _point(self, tenant: str, kind: str, value: str, replica: str) -> None:
        key = _affinity_key(tenant, kind, value)
        self._affinity[key] = replica
        self._affinity.move_to_end(key)
        while len(self._affinity) > MAX_AFFINITY:
            self._affinity.popitem(last=False)

    def started(self, ticket: Ticket) -> None:
        """`ticket`'s first token came back: its prefill is done, it is decoding now."""
        with self._lock:
            books = self._replicas.get(ticket.replica or "")
            if books is not None and ticket.request_id in books.in_flight:
                books.in_flight[ticket.request_id] = DECODE_TOKENS

    def finished(self, ticket: Ticket, cached_tokens: int | None) -> None:
        """The request ended on its replica; `cached_tokens` is what the replica read from a
        cache (None: it failed there, so nothing is compared)."""
        with self._lock:
            books = self._replicas.get(ticket.replica or "")
            if books is None:
                return
            books.in_flight.pop(ticket.request_id, None)
            if cached_tokens is None or ticket.predicted is None:
                return
            books.finished += 1
            books.predicted_tokens += ticket.predicted
            books.actual_tokens += cached_tokens
            agrees = abs(cached_tokens - ticket.predicted) < self.block_size
            books.disagreements += not agrees
            books.checks.append(agrees)
            if not agrees:
                log.debug("replica %s read %d cached tokens for %s, %d predicted", ticket.replica,
                          cached_tokens, ticket.request_id, ticket.predicted)

    def point(self, tenant: str, kind: str, value: str, replica: str) -> None:
        """Name `replica` as where `value` (e.g. a response id made there) lives now."""
        with self._lock:
            self._point(tenant, kind, value, replica)

    # ---- reading -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict]:
        """Per replica: trust, report generation, in flight, predicted and actual cached tokens."""
        with self._lock:
            return {
                replica: dict(
                    trusted=b.distrust is None, distrust=b.distrust,
                    generation=None if b.report is None else b.report.generation,
                    blocks_reported=0 if b.report is None else len(b.report.keys),
                    reported_running=0 if b.report is None else b.report.running + b.report.waiting,
                    others_load_tokens=0 if b.report is None else b.report.others(self.source)[1],
                    reported_aborted=0 if b.report is None else b.report.aborted,
                    in_flight=len(b.in_flight), predicted_tokens=b.predicted_tokens, actual_tokens=b.actual_tokens,
                    finished=b.finished, disagreements=b.disagreements,
                )
                for replica, b in self._replicas.items()
            }

    def where(self, request_id: str) -> tuple[str, str] | None:
        """(replica, reason) of a recent request, as last routed."""
        with self._lock:
            for rid, replica, reason in reversed(self.routes):
                if rid == request_id:
                    return replica, reason
        return None

    def all_trusted(self, replicas: Iterable[str]) -> bool:
        now = self.clock()
        with self._lock:
            return all(self._trust(r, self._replicas.setdefault(r, ReplicaBooks()), now) for r in replicas)


_BOOKS: dict[str, RouterBook] = {}
_BOOKS_LOCK = threading.Lock()


def book_for(name: str, **settings) -> RouterBook:
    """The book `name` of this process, made on first use with `settings`: shared by the
    router (which Ray Serve builds inside the handle) and the ingress that holds the handle."""
    with _BOOKS_LOCK:
        book = _BOOKS.get(name)
        if book is None:
            book = _BOOKS[name] = RouterBook(**settings)
        return book

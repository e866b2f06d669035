"""The Ray Serve request router: ranks the replicas for each request by `book.py`'s state.

Ray Serve makes one router per deployment handle, in the process that holds the handle (the
ingress), and calls `choose_replicas` for each request with the replicas it may use; it tries
the first rank, then the next if that replica is full. We return one replica per rank, best
first. The request's `Ticket` (block keys, prompt size, affinity ids) is the second argument of
the call, and the book is shared with the ingress through `book_for(name)`: the ingress tells
it which replica served a request and how many tokens that replica read from its cache.

A ticket with a `target` (per_replica.py) goes to that replica while it is live: an operation on
its cache, or a prefix reserved there. When the target is gone, an operation goes to any replica
(which answers that it is not the target) and a request is routed as any other. The live set
Ray Serve hands the router (`update_replicas`) is the roster operations are spread over.

Every replica's latest routing stats (`record_routing_stats`, `summary.py`) arrive with the
candidates; the book takes in the new ones at each decision.

Ray Serve ships this module's code by value to the handle's process, so it holds no state of
its own: the books live in `book.py`, imported there by reference.
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from promptcache.scaleout.book import Ticket, book_for
from promptcache.scaleout.scoring import Weights


def ticket_of(request: PendingRequest | None) -> Ticket | None:
    if request is None:
        return None
    for arg in list(request.args) + list(request.kwargs.values()):
        if isinstance(arg, Ticket):
            return arg
    return None


class PromptCacheRouter(RequestRouter):
    """`request_router_kwargs`: book (its name), mode, block_size, overlap_weight,
    overload_requests, stale_after_s, recent_ttl_s."""

    def initialize_state(self, book: str = "default", mode: str = "prefix", block_size: int = 16,
                         overlap_weight: float = 1.0, overload_requests: int = 8, stale_after_s: float = 5.0,
                         recent_ttl_s: float = 5.0, **_ignored) -> None:
        self.book = book_for(book, mode=mode, block_size=block_size,
                             weights=Weights(overlap_weight, overload_requests),
                             stale_after_s=stale_after_s, recent_ttl_s=recent_ttl_s)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        ticket = ticket_of(pending_request)
        if ticket is None or not candidate_replicas:  # not a generation request: any replica
            return [candidate_replicas]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        if ticket.target is not None:
            if ticket.target in by_id:  # a per-replica operation, or a prefix reserved there
                if not ticket.admin:
                    self.book.routed(ticket, ticket.target, ticket.predicted)
                return [[by_id[ticket.target]]]
            if ticket.admin:  # gone: any replica answers that it is not the target
                return [candidate_replicas]
        for rid, replica in by_id.items():
            self.book.observe(rid, replica.routing_stats)
        decision = self.book.decide(by_id, ticket)
        first = decision.order[0]
        self.book.routed(ticket, first, decision.predicted[first])
        return [[by_id[rid]] for rid in decision.order]

    def update_replicas(self, replicas: list[RunningReplica]):
        super().update_replicas(replicas)
        self.book.set_roster(r.replica_id.unique_id for r in replicas)

    def on_replica_actor_died(self, replica_id: ReplicaID):
        super().on_replica_actor_died(replica_id)
        self.book.forget(replica_id.unique_id)

"""The routing decision, as a pure function of what the router knows: no Ray, no I/O, no clock.

For each candidate replica the router knows how many leading blocks of the request it holds
(`held_blocks`, from the replica's own reports plus what the router itself sent there since),
how much work this router has in flight on it, and whether its reports can be trusted. The
rule, in tokens (Dynamo's KV router rule, with llm-d's idea of a weighted load scorer):

    cost(r) = overlap_weight * (prompt tokens the replica would still have to compute)
              + the work ahead of it on r

and the cheapest replica wins. The work ahead is the prefill still to run there (the uncached
prompt tokens of requests sent to r whose first token has not come back), plus
`DECODE_TOKENS` per request already decoding: chunked prefill runs beside decode steps, so a
decoding request delays a new prompt by little, one still prefilling by all its tokens. A
cache hit is thus worth `overlap_weight` tokens of queue per token saved, never an unbounded
wait: a replica holding the whole prefix but with a long queue loses to an idle one. A prefix held in the shared Redis counts as reachable from every
replica (any of them fetches it), so it lowers every cost alike. Ties go to the replica with
fewer requests in flight, then to the next one in a rotation, so that misses at low load are
spread over the replicas instead of all landing on the first. A replica with
`overload_requests` (the batch size) in flight already has no free slot, so a new request there
would wait for a whole reply: it goes after every replica with a free slot, whatever it holds.

Affinity: a request naming a session, a previous response or a prompt_cache_key goes first to
the replica that served that id last, unless it is gone (not a candidate) or overloaded (at
least `overload_requests` in flight), and then by cost as any other.

Fallback: when any candidate's reports are stale or disagree with what the replica then
served (the caller decides, `book.py`), the decision is least-loaded for every candidate, and
says so in its `reason`: the router never ranks on data it does not trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MODES = ("prefix", "round-robin", "least-loaded")
DECODE_TOKENS = 16  # what one decoding request adds to the work ahead of a new prompt (a block)


@dataclass(frozen=True)
class Candidate:
    replica: str
    held_blocks: int  # leading blocks of the request this replica holds (memory or its disk)
    in_flight: int  # requests this router has in flight on it
    load_tokens: int  # the work ahead on it, in tokens (see the module's docstring)
    trusted: bool = True  # its reports are fresh and agree with what it served


@dataclass(frozen=True)
class Weights:
    overlap_weight: float = 1.0  # tokens of queue one cached prompt token is worth
    overload_requests: int = 8  # in flight at or past this: no free slot; affinity no longer binds


@dataclass(frozen=True)
class Decision:
    order: tuple[str, ...]  # best first
    predicted: dict[str, int]  # replica -> prompt tokens it should read from a cache
    reason: str  # "prefix", "affinity", "round-robin", "least-loaded", "fallback"


def leading_run(keys: Sequence[int], held) -> int:
    """How many of `keys`, from the first, are in `held` (a prefix, so it stops at a gap)."""
    n = 0
    for key in keys:
        if key not in held:
            break
        n += 1
    return n


def predicted_tokens(c: Candidate, shared_blocks: int, usable_blocks: int, block_size: int) -> int:
    """Prompt tokens replica `c` should read from its cache or the shared tier."""
    return min(max(c.held_blocks, shared_blocks), usable_blocks) * block_size


def _rotation(candidates: Sequence[Candidate], turn: int) -> dict[str, int]:
    """Each replica's place in a rotation that starts at `turn` (ids sorted, so every router
    process rotates over the same order)."""
    ids = sorted(c.replica for c in candidates)
    return {rid: (i - turn) % len(ids) for i, rid in enumerate(ids)}


def decide(candidates: Sequence[Candidate], *, mode: str, prompt_tokens: int, usable_blocks: int,
           shared_blocks: int, block_size: int, turn: int, affinity: str | None = None,
           weights: Weights = Weights()) -> Decision:
    """Rank `candidates` for one request. `usable_blocks`: the most leading blocks any replica
    could read (the engine always computes the prompt's last rows); `shared_blocks`: leading
    blocks the shared tier holds; `turn`: a counter the caller advances once per request."""
    if mode not in MODES:
        raise ValueError(f"unknown routing mode {mode!r}; choose one of {', '.join(MODES)}")
    if not candidates:
        return Decision((), {}, "none")
    predicted = {c.replica: predicted_tokens(c, shared_blocks, usable_blocks, block_size) for c in candidates}
    place = _rotation(candidates, turn)
    if mode == "round-robin":
        order = sorted(candidates, key=lambda c: place[c.replica])
        return Decision(tuple(c.replica for c in order), predicted, "round-robin")
    least_loaded = sorted(candidates, key=lambda c: (c.in_flight, c.load_tokens, place[c.replica]))
    if mode == "least-loaded":
        return Decision(tuple(c.replica for c in least_loaded), predicted, "least-loaded")
    if not all(c.trusted for c in candidates):
        return Decision(tuple(c.replica for c in least_loaded), predicted, "fallback")

    def cost(c: Candidate) -> tuple[bool, float, int, int]:
        uncached = prompt_tokens - predicted[c.replica]
        full = c.in_flight >= weights.overload_requests  # no free slot: it would wait for a whole reply
        return (full, weights.overlap_weight * uncached + c.load_tokens, c.in_flight, place[c.replica])

    order = sorted(candidates, key=cost)
    reason = "prefix"
    if affinity is not None:
        sticky = next((c for c in candidates if c.replica == affinity), None)
        if sticky is not None and sticky.in_flight < weights.overload_requests:
            order = [sticky] + [c for c in order if c is not sticky]
            reason = "affinity"
    return Decision(tuple(c.replica for c in order), predicted, reason)

"""Operations on the replicas' own caches, from the ingress: which replicas each goes to, and
how their answers combine (docs/deployment.md, "Per-replica operations").

- To every live replica (the roster Ray Serve last gave the router): `/v1/cache/flush` (blocks
  summed), `/v1/cache/stats` (counters summed, each replica's figures listed), and the prefixes
  that should be warm wherever a request lands: admin pins and warm registered prompts
  (`EVERYWHERE`: reserved, computed and pinned on each, released on each).
- To one replica: `/v1/cache/explain` (the one the router would pick for that prompt, named in
  the answer), and every other retained prefix, a session's or a cached content's: reserved on
  the replica the router picks for it, which its owner then has affinity to, so the session's
  turns follow it. Releasing goes to every replica (a session that moved holds on two).

Each call is `EngineReplica.admin` through the Ray Serve handle, with a ticket whose `target`
names the replica: the router sends it there while it is live (router.py). A replica that went
away answers nothing: it is left out of a sum, and a prefix whose replica is gone reads as not
pinned, so the next use pins it again where it lands. These run in worker threads (the routes
call the engine's admin methods through run_in_threadpool), so they wait on each answer; only
`tell` (dropping a reservation, called on the event loop) does not wait.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Sequence

from promptcache.scaleout.book import RouterBook, Ticket
from promptcache.scaleout.replica import Answer, HeldPath

log = logging.getLogger("promptcache.scaleout")

EVERYWHERE = ("pin:", "prompt:")  # owners pinned on every replica: admin pins, warm registered prompts
CALL_TIMEOUT_S = 120.0
SAME_ON_EVERY_REPLICA = frozenset({"enabled", "block_size", "block_nbytes"})
MAX_REMEMBERED = 10_000


def everywhere(owner: str | None) -> bool:
    return owner is not None and owner.startswith(EVERYWHERE)


def explain_key(tokens: Sequence[int], options) -> tuple:
    return hash(tuple(tokens)), options.tenant, options.salt


def combine_stats(per_replica: dict[str, dict]) -> dict:
    """One cluster's figures from each replica's: integer counters and bytes summed (through
    nested dicts, e.g. per tenant and per tier), the token hit ratio recomputed from the sums,
    figures every replica shares taken once; estimates (floats) only in `replicas`."""

    def merge(into: dict, stats: dict) -> None:
        for key, value in stats.items():
            if isinstance(value, bool) or key in SAME_ON_EVERY_REPLICA:
                into.setdefault(key, value)
            elif isinstance(value, int):
                into[key] = into.get(key, 0) + value
            elif isinstance(value, dict):
                merge(into.setdefault(key, {}), value)

    out: dict = {}
    for stats in per_replica.values():
        merge(out, stats)
    looked_up = out.get("hit_tokens", 0) + out.get("miss_tokens", 0)
    if "hit_tokens" in out:
        out["token_hit_ratio"] = out["hit_tokens"] / looked_up if looked_up else 0.0
    out["replicas"] = per_replica
    return out


class ReplicaOps:
    """The ingress's calls on the replicas' caches; `handle` is the deployment's Ray Serve handle."""

    def __init__(self, handle, book: RouterBook, timeout_s: float = CALL_TIMEOUT_S):
        self.handle = handle
        self.book = book
        self.timeout_s = timeout_s
        self.held: OrderedDict[str, HeldPath] = OrderedDict()  # owner -> its path, as last heard
        self.explained: OrderedDict[tuple, str] = OrderedDict()  # (tokens, tenant, salt) -> replica asked

    # ---- calls -----------------------------------------------------------------------------

    def _ticket(self, target: str) -> Ticket:
        return Ticket(f"admin-{uuid.uuid4().hex}", target=target, admin=True)

    def on(self, replicas: Sequence[str], op: str, *args) -> dict[str, object]:
        """Run `op` on each of `replicas` at once; {replica: result} of those that answered as
        themselves. An engine refusal (PinBudgetExceeded...) is raised once all have answered."""
        calls = {rid: self.handle.admin.remote(self._ticket(rid), op, *args) for rid in replicas}
        results: dict[str, object] = {}
        refusal = None
        for rid, call in calls.items():
            try:
                answer = call.result(timeout_s=self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - a replica that died meanwhile: left out
                log.warning("replica %s did not answer %s: %s", rid, op, type(exc).__name__)
                continue
            if not isinstance(answer, Answer):  # NotTarget: that replica is gone
                continue
            if answer.error is not None:
                refusal = refusal or answer.error
            else:
                results[rid] = answer.result
        if refusal is not None:
            raise refusal
        return results

    def tell(self, replica: str, op: str, *args) -> None:
        """`op` on `replica`, not waited for (from the event loop)."""
        self.handle.admin.remote(self._ticket(replica), op, *args)

    def everywhere(self, op: str, *args) -> dict[str, object]:
        return self.on(self.book.roster(), op, *args)

    # ---- what the answers mean ---------------------------------------------------------------

    def remember(self, path: HeldPath, replica: str | None = None) -> None:
        """`path` is what its owner holds now; on `replica`, which its later requests go to."""
        self.held[path.owner] = path
        self.held.move_to_end(path.owner)
        while len(self.held) > MAX_REMEMBERED:
            self.held.popitem(last=False)
        if replica is not None and path.blocks and not everywhere(path.owner):
            self.book.point("", "owner", path.owner, replica)

    def explained_at(self, tokens: Sequence[int], options, replica: str) -> None:
        key = explain_key(tokens, options)
        self.explained[key] = replica
        self.explained.move_to_end(key)
        while len(self.explained) > MAX_REMEMBERED:
            self.explained.popitem(last=False)

    def retained_blocks(self, owner: str) -> int:
        """Blocks `owner` keeps pinned: for a prefix kept everywhere, the fewest any live replica
        holds; else the most one holds (that replica is where the owner's requests go)."""
        paths = self.everywhere("held", owner)
        if not paths:
            return 0
        if everywhere(owner):
            return min(p.blocks for p in paths.values())
        replica, path = max(paths.items(), key=lambda kv: kv[1].blocks)
        self.remember(path, replica)
        return path.blocks

    def release_retained(self, owner: str) -> int:
        """Unpin `owner` on every replica; the blocks one replica held (the most, for a session
        that moved)."""
        self.held.pop(owner, None)
        return max(self.everywhere("release_retained", owner).values(), default=0)

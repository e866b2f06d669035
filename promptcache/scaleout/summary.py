"""A replica's report of the blocks it holds, for the router: Ray Serve's routing stats.

The report lists every live block of the memory cache and of the local disk tier, as the first
8 bytes of its key (`book.key64`): 8 bytes per block, e.g. 160 KB for a 20,000-block cache, so
a 256 MiB memory cache of SmolLM2 is reported whole in a few KB. A block held only in Redis is
not listed: every replica can fetch it, and the router asks Redis itself.

The memory cache is read under the engine's lock (the stepping thread changes it only while
holding that lock, as `server/explain.py` does), so a report is one consistent state; the
caller runs this off its event loop because a step can hold the lock for a while.

The report also carries the replica's load, per ingress that sent the requests (`work_ahead`):
a router counts the other ingress processes' load from it, and its own from its own books.

`generation` advances at every report and `epoch` is random per process, so the router can tell
a fresh report from the last one seen again and notice when reports stop.
"""

from __future__ import annotations

import itertools
import uuid

from promptcache.cache.trie import BlockTrie
from promptcache.scaleout.book import pack_keys
from promptcache.scaleout.scoring import DECODE_TOKENS


def memory_keys(engine) -> list[int]:
    """key64 of every unexpired block in the engine's memory cache."""
    prefix = engine.prefix
    if prefix is None:
        return []
    cache = prefix.cache
    now = cache._clock()
    out = []
    with engine._lock:
        for root in cache._trie.roots():
            for node in BlockTrie.postorder(root):
                if node is not root and not node.expired(now):
                    out.append(int.from_bytes(node.key[:8], "little"))
    return out


def disk_keys(engine) -> list[int]:
    """key64 of every block in the engine's local disk tier (none without one)."""
    tiers = engine.prefix.tiers if engine.prefix is not None else None
    out: list[int] = []
    for tier in tiers.tiers if tiers is not None else ():
        store = tier.store
        if store.name == "disk":
            with store._lock:
                names = list(store._index)
            out.extend(int.from_bytes(bytes.fromhex(name)[:8], "little") for name in names)
    return out


def work_ahead(engine, sources: dict[str, str]) -> dict[str, list[int]]:
    """{source: [requests, tokens of work]} of the requests here, by the ingress that sent them
    (`sources`: request id -> the ticket's source; "" for one without). The work is what
    scoring.py counts ahead of a new prompt: what a prefilling request has left to compute,
    DECODE_TOKENS for a decoding one, and a waiting prompt whole (how much of it is cached is
    known only once it is admitted)."""
    out: dict[str, list[int]] = {}

    def add(request_id: str, tokens: int) -> None:
        row = out.setdefault(sources.get(request_id, ""), [0, 0])
        row[0] += 1
        row[1] += tokens

    with engine._inbox_lock:
        inbox = [(r.request_id, len(r.prompt_tokens)) for r in engine._inbox]
    scheduler = engine.scheduler
    with engine._lock:
        rows = inbox + [(seq.request_id, seq.num_prompt) for seq in scheduler.waiting]
        rows += [(seq.request_id, seq.num_prompt - seq.num_computed) for seq in scheduler.prefilling]
        rows += [(seq.request_id, DECODE_TOKENS) for seq in scheduler.running]
    for request_id, tokens in rows:
        add(request_id, tokens)
    return out


class KeySummary:
    def __init__(self, engine):
        self.engine = engine
        self.epoch = uuid.uuid4().hex
        self._generations = itertools.count(1)

    def report(self, aborted: int = 0, sources: dict[str, str] | None = None) -> dict:
        keys = set(memory_keys(self.engine))
        keys.update(disk_keys(self.engine))
        return {
            "epoch": self.epoch,
            "generation": next(self._generations),
            "model_id": self.engine.model_id,
            "keys": pack_keys(sorted(keys)),
            "waiting": self.engine.num_waiting(),
            "running": self.engine.num_running(),
            "load": work_ahead(self.engine, dict(sources or {})),
            "aborted": aborted,
        }

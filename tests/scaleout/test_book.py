"""The router's book (promptcache/scaleout/book.py), without Ray, on an injected clock: reports,
what it routed, trust and its warnings, affinity, and the ticket the replicas receive."""

from __future__ import annotations

import logging
import pickle

from hypothesis import given
from hypothesis import strategies as st

from promptcache.scaleout.book import RouterBook, Ticket, key64, pack_keys, unpack_keys
from promptcache.scaleout.summary import KeySummary

MODEL = "model-a"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def report(generation, keys=(), model=MODEL, epoch="e1", load=None):
    return {"epoch": epoch, "generation": generation, "model_id": model, "keys": pack_keys(keys), "load": load or {}}


def ticket(rid, keys, usable=None, **kw):
    return Ticket(rid, "t", MODEL, tuple(keys), prompt_tokens=16 * (len(keys) + 1),
                  usable_blocks=len(keys) if usable is None else usable, **kw)


def make(**kw):
    clock = Clock()
    return RouterBook(block_size=16, stale_after_s=5.0, recent_ttl_s=3.0, clock=clock, **kw), clock


@given(st.lists(st.integers(0, 2**64 - 1), max_size=50))
def test_packed_keys_round_trip(keys):
    assert unpack_keys(pack_keys(keys)) == frozenset(keys)


def test_key64_is_the_first_eight_bytes():
    assert key64(bytes(range(16))) == int.from_bytes(bytes(range(8)), "little")


def test_the_replica_that_reports_the_prefix_wins_and_is_predicted_exactly():
    book, clock = make()
    book.observe("a", report(1, [1, 2]))
    book.observe("b", report(1, [1, 2, 3, 4]))
    d = book.decide(["a", "b"], ticket("q", [1, 2, 3, 4, 5]))
    assert d.order[0] == "b" and d.predicted == {"a": 32, "b": 64} and d.reason == "prefix"


def test_what_was_routed_counts_until_reports_can_include_it():
    book, clock = make()
    for r in "ab":
        book.observe(r, report(1))
    t1 = ticket("q1", [7, 8, 9])
    first = book.decide(["a", "b"], t1).order[0]
    book.routed(t1, first, 0)
    book.finished(t1, 0)
    d = book.decide(["a", "b"], ticket("q2", [7, 8, 9, 10]))
    assert d.order[0] == first and d.predicted[first] == 48
    clock.now += 3.5  # past recent_ttl_s, and the replicas' fresh reports do not list the blocks
    for r in "ab":
        book.observe(r, report(2))
    assert book.decide(["a", "b"], ticket("q3", [7, 8, 9, 10])).predicted[first] == 0


def test_a_report_that_stops_advancing_is_stale_warned_and_not_routed_on(caplog):
    book, clock = make()
    book.observe("a", report(1, [1, 2, 3]))
    book.observe("b", report(1))
    assert book.decide(["a", "b"], ticket("q", [1, 2, 3])).reason == "prefix"
    clock.now += 6
    book.observe("a", report(1, [1, 2, 3]))  # the same report again: not fresh
    book.observe("b", report(2))
    with caplog.at_level(logging.WARNING, logger="promptcache.scaleout.router"):
        d = book.decide(["a", "b"], ticket("q", [1, 2, 3]))
        book.decide(["a", "b"], ticket("q", [1, 2, 3]))
    assert d.reason == "fallback"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "replica a" in warnings[0] and "s old" in warnings[0]  # once, not per request
    book.observe("a", report(2, [1, 2, 3]))
    assert book.decide(["a", "b"], ticket("q", [1, 2, 3])).reason == "prefix"


def test_reports_that_disagree_with_the_served_tokens_are_distrusted(caplog):
    book, clock = make()
    book.observe("a", report(1, [1, 2, 3, 4]))
    with caplog.at_level(logging.WARNING, logger="promptcache.scaleout.router"):
        for i in range(3):
            t = ticket(f"q{i}", [1, 2, 3, 4])
            d = book.decide(["a"], t)
            book.routed(t, "a", d.predicted["a"])
            book.finished(t, 0)  # the replica read nothing of the 64 tokens predicted
        assert book.decide(["a"], ticket("q", [1, 2, 3, 4])).reason == "fallback"
    assert any("disagree" in r.getMessage() for r in caplog.records)
    snap = book.snapshot()["a"]
    assert snap["predicted_tokens"] == 192 and snap["actual_tokens"] == 0 and snap["disagreements"] == 3
    for i in range(2):  # agreeing again restores trust
        t = ticket(f"r{i}", [1, 2, 3, 4])
        book.routed(t, "a", 64)
        book.finished(t, 64)
    assert book.decide(["a"], ticket("q", [1, 2, 3, 4])).reason == "prefix"


def test_no_report_yet_is_least_loaded():
    book, _ = make()
    book.observe("a", report(1))
    assert book.decide(["a", "b"], ticket("q", [1])).reason == "fallback"


def test_another_models_report_holds_nothing_for_this_request():
    book, _ = make()
    book.observe("a", report(1, [1, 2, 3], model="model-b"))
    book.observe("b", report(1))
    assert book.decide(["a", "b"], ticket("q", [1, 2, 3])).predicted == {"a": 0, "b": 0}


def test_affinity_follows_the_last_replica_and_dies_with_it():
    book, _ = make()
    for r in "abc":
        book.observe(r, report(1))
    t = ticket("q1", [], affinity=(("session", "s1"),))
    book.decide(["a", "b", "c"], t)
    book.routed(t, "c", 0)
    d = book.decide(["a", "b", "c"], ticket("q2", [5], affinity=(("session", "s1"),)))
    assert d.order[0] == "c" and d.reason == "affinity"
    other_tenant = Ticket("q3", "u", MODEL, (5,), 32, 1, affinity=(("session", "s1"),))
    assert book.decide(["a", "b", "c"], other_tenant).reason == "prefix"  # ids are per tenant
    book.forget("c")
    assert book.decide(["a", "b"], ticket("q4", [5], affinity=(("session", "s1"),))).reason == "prefix"


def test_in_flight_load_moves_when_a_request_is_routed_again():
    book, _ = make()
    t = ticket("q", [1, 2])
    book.routed(t, "a", 0)
    book.routed(t, "b", 0)
    snap = book.snapshot()
    assert snap["a"]["in_flight"] == 0 and snap["b"]["in_flight"] == 1
    assert book.where("q") == ("b", "none")
    book.finished(t, None)
    assert book.snapshot()["b"]["in_flight"] == 0 and book.snapshot()["b"]["finished"] == 0


def test_the_ticket_reaches_a_replica_without_its_keys():
    t = ticket("q", [1, 2, 3], affinity=(("session", "s"),))
    t.full_keys = [b"x" * 16]
    shipped = pickle.loads(pickle.dumps(t))
    assert shipped.request_id == "q" and shipped.keys == () and shipped.full_keys == []


def test_a_replica_summary_lists_its_cached_blocks(tiny_llama_dir):
    """The report of a real engine: the key64 of every block its memory cache holds."""
    from promptcache.cache.config import CacheConfig
    from promptcache.cache.keys import Namespace, block_keys
    from promptcache.engine.api import SamplingParams
    from promptcache.engine.engine import Engine

    engine = Engine.from_model(str(tiny_llama_dir), deterministic=False,  # numerics are not the point here
                               cache_config=CacheConfig(max_bytes=2 << 20, default_tenant_share=1.0))
    prompt = list(range(300, 400))
    engine.generate([prompt], SamplingParams(max_tokens=1))
    engine.cache_stats()  # runs the pending saves
    stats = KeySummary(engine).report()
    held = unpack_keys(stats["keys"])
    expected = {key64(k) for k in block_keys(prompt, 16, Namespace(engine.model_id))}
    assert held == expected and stats["generation"] == 1 and stats["model_id"] == engine.model_id
    assert KeySummary(engine).report()["epoch"] != stats["epoch"]


def test_a_request_weighs_on_its_replica_while_it_prefills_and_little_once_it_decodes():
    book, _ = make()
    for r in "ab":
        book.observe(r, report(1, [1, 2, 3, 4] if r == "a" else []))
    long = Ticket("long", "t", MODEL, (), prompt_tokens=2000, usable_blocks=0)
    book.routed(long, "a", 0)
    assert book.decide(["a", "b"], ticket("q1", [1, 2, 3, 4])).order[0] == "b"  # 2,000 tokens ahead on a
    book.started(long)
    assert book.decide(["a", "b"], ticket("q2", [1, 2, 3, 4])).order[0] == "a"  # now a block's worth


def test_a_request_served_elsewhere_than_predicted_is_not_compared():
    book, _ = make()
    t = ticket("q", [1, 2])
    book.routed(t, "a", 32)
    book.routed(t, "b", None)  # Ray Serve sent it to b: nothing was predicted for b
    book.finished(t, 0)
    assert book.snapshot()["b"]["finished"] == 0 and book.snapshot()["b"]["disagreements"] == 0


def test_the_load_other_ingresses_report_counts_and_this_routers_own_is_not_counted_twice():
    book, clock = make()
    book.observe("a", report(1, [1, 2, 3, 4], load={"other-ingress": [2, 900]}))
    book.observe("b", report(1))
    assert book.decide(["a", "b"], ticket("q1", [1, 2, 3, 4])).order[0] == "b"  # a: 900 tokens of another's queue
    book.observe("a", report(2, load={}))
    book.observe("b", report(2, [1, 2, 3, 4]))
    mine = Ticket("mine", "t", MODEL, (), prompt_tokens=900, usable_blocks=0)
    book.routed(mine, "b", 0)
    book.observe("b", report(3, [1, 2, 3, 4], load={book.source: [1, 900]}))  # b reports this router's request
    assert book.snapshot()["b"]["others_load_tokens"] == 0
    assert book.decide(["a", "b"], ticket("q2", [1, 2, 3, 4])).order[0] == "a"  # 900 ahead on b (once, not twice)
    book.finished(mine, 0)  # done: no longer load, though b's last report still lists it
    assert book.decide(["a", "b"], ticket("q3", [1, 2, 3, 4])).order[0] == "b"
    clock.now += 6  # a stale report is not used, for its load nor its blocks
    book.observe("b", report(4))
    assert book.decide(["a", "b"], ticket("q4", [1])).reason == "fallback"

"""The scheduler without a model: cache-aware order, tenants taking turns, anti-starvation,
slots and queues, slot shares and preemption between tenants, and chunk sizing on the attention
grid with the MIN_ROWS tail rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache.engine.api import CacheOptions, Request
from promptcache.engine.scheduler import Scheduler
from promptcache.engine.sequence import Sequence, Status
from promptcache.model.attention import GRID
from promptcache.model.row_invariance import MIN_ROWS


def seq(request_id: str, tenant: str = "t", prompt_len: int = 100) -> Sequence:
    request = Request(request_id, list(range(prompt_len)), cache=CacheOptions(tenant=tenant))
    return Sequence(request, detokenizer=None, generator=None)


class Cached:
    """The scheduler's view of the prefix cache: request id -> cached prompt tokens."""

    def __init__(self, tokens: dict[str, int] | None = None):
        self.tokens = tokens or {}

    def __call__(self, s: Sequence) -> int:
        return self.tokens.get(s.request_id, 0)


def scheduler(num_slots: int = 1, cached: dict[str, int] | None = None, **kwargs) -> Scheduler:
    return Scheduler(num_slots, Cached(cached), **kwargs)


def admission_order(sched: Scheduler) -> list[str]:
    order = []
    while sched.waiting:
        order.append(sched.pop_next().request_id)
    return order


def check_books(sched: Scheduler) -> None:
    """Every slot is free or held by exactly one queued sequence; statuses match queues."""
    held = [s.slot for s in [*sched.prefilling, *sched.running]]
    assert sorted(held + sched.free_slots) == list(range(sched.num_slots))
    assert all(s.status is Status.WAITING and s.slot is None for s in sched.waiting)
    assert all(s.status is Status.PAUSED and s.slot is None and s.parked is not None for s in sched.paused)
    assert len(sched.paused) <= sched.max_paused
    assert all(s.status is Status.PREFILL for s in sched.prefilling)
    assert all(s.status is Status.RUNNING for s in sched.running)


# -- admission order ----------------------------------------------------------------------------

# name -> (arrivals as (request id, tenant), cached tokens by id, expected admission order)
ORDER_CASES = {
    "longest cached prefix first": ([("a", "t"), ("b", "t"), ("c", "t")], {"b": 64, "c": 32}, ["b", "c", "a"]),
    "ties are first come first served": ([("a", "t"), ("b", "t"), ("c", "t")], {}, ["a", "b", "c"]),
    "ties among the cached": ([("a", "t"), ("b", "t"), ("c", "t")], {"b": 16, "c": 16}, ["b", "c", "a"]),
    "tenants take turns": ([("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B")], {}, ["a1", "b1", "a2", "a3"]),
    "turns beat a longer prefix": ([("a1", "A"), ("a2", "A"), ("b1", "B")], {"a2": 512}, ["a2", "b1", "a1"]),
    "cache-aware within a tenant's turn": (
        [("a1", "A"), ("b1", "B"), ("b2", "B"), ("a2", "A")], {"b2": 48, "a2": 16}, ["a2", "b2", "a1", "b1"]),
    "three tenants round robin": (
        [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B"), ("c1", "C")], {},
        ["a1", "b1", "c1", "a2", "b2"]),
}


@pytest.mark.parametrize("name", ORDER_CASES)
def test_admission_order(name):
    arrivals, cached, expected = ORDER_CASES[name]
    sched = scheduler(cached=cached)
    for request_id, tenant in arrivals:
        sched.add(seq(request_id, tenant))
    assert admission_order(sched) == expected


def test_tenant_order_remembers_earlier_admissions():
    sched = scheduler()
    sched.add(seq("a1", "A"))
    assert sched.pop_next().request_id == "a1"
    for request_id, tenant in [("a2", "A"), ("a3", "A"), ("b1", "B")]:
        sched.add(seq(request_id, tenant))
    # A was admitted last; B has never been: B goes first although it arrived last.
    assert admission_order(sched) == ["b1", "a2", "a3"]


def test_only_the_window_is_scored():
    sched = scheduler(cached={"late": 1000}, window=3)
    for request_id in ["a", "b", "c", "late"]:
        sched.add(seq(request_id))
    assert sched.pop_next().request_id == "a"  # "late" is outside the 3 oldest


def test_pop_next_on_an_empty_queue_is_none():
    assert scheduler().pop_next() is None


# -- anti-starvation ----------------------------------------------------------------------------

@pytest.mark.parametrize("rounds", [1, 3, 8])
def test_an_uncached_request_is_admitted_after_starvation_rounds(rounds):
    """Each round a newer request with a long cached prefix arrives and one slot frees: the old
    uncached one would wait forever under longest-prefix-first alone."""
    cached = Cached()
    sched = Scheduler(1, cached, starvation_rounds=rounds)
    sched.add(seq("old"))
    admitted = []
    for i in range(rounds + 3):
        cached.tokens[f"new{i}"] = 1024
        sched.add(seq(f"new{i}"))
        admitted.append(sched.pop_next().request_id)
    assert admitted.index("old") == rounds
    assert admitted[:rounds] == [f"new{i}" for i in range(rounds)]


def test_starving_requests_go_oldest_first():
    cached = Cached({"hot": 1024})
    sched = Scheduler(1, cached, starvation_rounds=2)
    for request_id in ["old1", "old2"]:
        sched.add(seq(request_id))
    for s in sched.waiting:
        s.waited_steps = 5
    sched.add(seq("hot"))
    assert admission_order(sched) == ["old1", "old2", "hot"]


@settings(max_examples=60, deadline=None)
@given(
    rounds=st.integers(1, 6),
    arrivals=st.lists(st.lists(st.tuples(st.sampled_from("ABC"), st.sampled_from([0, 16, 64, 512])), max_size=3),
                      min_size=1, max_size=25),
)
def test_no_request_waits_longer_than_starvation_rounds_plus_those_ahead(rounds, arrivals):
    """Arrivals come in bursts, one slot frees per round. A request waits at most
    `starvation_rounds` admissions of its own tenant plus one for each request of its tenant
    that was waiting when it arrived; and tenants take turns, so between two admissions of its
    tenant at most one of each other tenant."""
    cached = Cached()
    sched = Scheduler(1, cached, starvation_rounds=rounds)
    ahead: dict[str, int] = {}
    waited: dict[str, int] = {}
    arrived: dict[str, int] = {}  # request id -> admissions before it arrived
    admitted_at: dict[str, int] = {}
    n = admissions = 0
    for burst in arrivals + [[]] * (3 * len(arrivals) + 1):
        for tenant, tokens in burst:
            request_id = f"r{n}"
            n += 1
            cached.tokens[request_id] = tokens
            ahead[request_id] = sum(s.tenant == tenant for s in sched.waiting)
            arrived[request_id] = admissions
            sched.add(seq(request_id, tenant))
        chosen = sched.pop_next()
        if chosen is not None:
            waited[chosen.request_id] = chosen.waited_steps
            admitted_at[chosen.request_id] = admissions
            admissions += 1
    assert not sched.waiting and len(waited) == n
    for request_id, steps in waited.items():
        assert steps <= rounds + ahead[request_id], (request_id, steps, ahead[request_id])
        own_turns = steps + 1  # the admissions of its tenant while it waited, its own included
        assert admitted_at[request_id] - arrived[request_id] < own_turns * 3  # three tenants


# -- slots and queues ---------------------------------------------------------------------------

def test_schedule_admits_into_free_slots_and_plans_one_prefill_chunk():
    sched = scheduler(num_slots=2, prefill_chunk=64, max_prefill_chunk=256)
    loaded = []

    def admit(s: Sequence) -> None:  # the engine copies a cached prefix in here
        loaded.append(s.request_id)
        s.num_cached = 32 if s.request_id == "a" else 0

    for request_id in ["a", "b", "c"]:
        sched.add(seq(request_id, prompt_len=400))
    plan = sched.schedule(admit)
    assert loaded == ["a", "b"]
    assert [(s.request_id, s.slot) for s in sched.prefilling] == [("a", 0), ("b", 1)]
    assert [s.request_id for s in sched.waiting] == ["c"] and not sched.free_slots
    assert plan.decode == [] and plan.prefill.seq.request_id == "a"
    assert (plan.prefill.start, plan.prefill.end) == (32, 288)  # nothing decodes: a large chunk, on the grid
    assert not plan.prefill.last
    check_books(sched)


def test_decode_batch_is_fixed_before_admission_and_prefill():
    sched = scheduler(num_slots=2, prefill_chunk=64)
    a, b = seq("a", prompt_len=40), seq("b", prompt_len=300)
    sched.add(a)
    plan = sched.schedule(lambda s: None)
    assert plan.prefill.last and plan.prefill.end == 40
    sched.prefill_done(a)
    sched.add(b)
    plan = sched.schedule(lambda s: None)
    assert plan.decode == [a] and plan.prefill.seq is b
    assert plan.prefill.end == 64  # a is decoding: a small chunk
    assert plan.sequences == [b, a]
    check_books(sched)


def test_finished_sequence_gives_its_slot_to_the_next():
    sched = scheduler(num_slots=1)
    a, b = seq("a"), seq("b")
    sched.add(a)
    sched.add(b)
    sched.schedule(lambda s: None)
    sched.prefill_done(a)
    assert sched.num_active() == 1 and sched.num_waiting() == 1
    sched.remove(a)
    a.status = Status.FINISHED
    sched.free_slot(a)
    sched.free_slot(a)  # a second free of the same sequence is a no-op
    assert a.slot is None and sched.free_slots == [0]
    sched.schedule(lambda s: None)
    assert b.slot == 0 and list(sched.prefilling) == [b]
    check_books(sched)


@pytest.mark.parametrize("status", [Status.WAITING, Status.PREFILL, Status.RUNNING])
def test_remove_takes_a_sequence_out_of_its_queue(status):
    sched = scheduler(num_slots=2)
    a, b = seq("a"), seq("b")
    sched.add(a)
    sched.add(b)
    if status is not Status.WAITING:
        sched.schedule(lambda s: None)
    if status is Status.RUNNING:
        sched.prefill_done(a)
    sched.remove(a)
    assert a not in sched.waiting and a not in sched.prefilling and a not in sched.running
    assert b in [*sched.waiting, *sched.prefilling]


# -- slot shares and preemption ---------------------------------------------------------------

class Parking:
    """The engine's part of a preemption, without KV: marks a sequence parked, or refuses."""

    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.parked: list[str] = []
        self.resumed: list[str] = []

    def park(self, s: Sequence) -> bool:
        if self.refuse:
            return False
        s.parked = object()
        self.parked.append(s.request_id)
        return True

    def resume(self, s: Sequence) -> None:
        s.parked = None
        self.resumed.append(s.request_id)


def running(sched: Scheduler, parking: Parking, *specs: tuple[str, str, int]) -> list[Sequence]:
    """Admit and finish the prefill of (request id, tenant, tokens generated) sequences."""
    seqs = [seq(request_id, tenant) for request_id, tenant, _ in specs]
    for s in seqs:
        sched.add(s)
    sched.schedule(lambda s: None, parking.park, parking.resume)
    for s, (_, _, generated) in zip(seqs, specs):
        sched.prefill_done(s)
        s.output_ids = [1] * generated
    return seqs


def test_a_tenant_below_its_share_takes_the_slot_of_the_longest_running_generation():
    sched, parking = scheduler(num_slots=4), Parking()
    a = running(sched, parking, ("a0", "A", 3), ("a1", "A", 9), ("a2", "A", 5), ("a3", "A", 9))
    b = seq("b", "B")
    sched.add(b)
    plan = sched.schedule(lambda s: None, parking.park, parking.resume)
    assert parking.parked == ["a1"]  # the most tokens generated; the earliest of equals
    assert sched.paused == [a[1]] and b.slot == 1 and plan.prefill.seq is b
    assert plan.decode == [a[0], a[2], a[3]]  # the paused one is out of this step
    check_books(sched)


def test_the_paused_generation_resumes_first_in_its_turn_and_decodes_at_once():
    sched, parking = scheduler(num_slots=2), Parking()
    a0, a1 = running(sched, parking, ("a0", "A", 5), ("a1", "A", 2))
    sched.add(b := seq("b", "B"))
    sched.add(a2 := seq("a2", "A"))
    sched.schedule(lambda s: None, parking.park, parking.resume)
    assert sched.paused == [a0] and b.status is Status.PREFILL
    sched.prefill_done(b)
    sched.remove(b)  # b ends and gives its slot back
    sched.free_slot(b)
    plan = sched.schedule(lambda s: None, parking.park, parking.resume)
    assert parking.resumed == ["a0"] and a0.status is Status.RUNNING and a0 in plan.decode
    assert a2.status is Status.WAITING and a0.parked is None
    check_books(sched)


@pytest.mark.parametrize("name,held,waiting", [
    ("one tenant never preempts itself", [("a0", "A"), ("a1", "A")], [("a2", "A")]),
    ("a waiting tenant at its share", [("a0", "A"), ("b0", "B")], [("b1", "B")]),
    ("holdings one apart", [("a0", "A"), ("a1", "A"), ("b0", "B")], [("b1", "B")]),
    ("below a share of 4/3, but no tenant two over it", [("a0", "A"), ("a1", "A"), ("b0", "B"), ("c0", "C")],
     [("c1", "C")]),
])
def test_no_preemption(name, held, waiting):
    sched, parking = scheduler(num_slots=len(held)), Parking()
    running(sched, parking, *[(r, t, 4) for r, t in held])
    for r, t in waiting:
        sched.add(seq(r, t))
    sched.schedule(lambda s: None, parking.park, parking.resume)
    assert parking.parked == [] and not sched.paused


def test_three_tenants_settle_one_slot_each():
    sched, parking = scheduler(num_slots=3), Parking()
    running(sched, parking, ("a0", "A", 4), ("a1", "A", 4), ("c0", "C", 4))
    sched.add(seq("c1", "C"))
    sched.add(seq("b0", "B"))
    sched.schedule(lambda s: None, parking.park, parking.resume)
    assert parking.parked == ["a0"] and sched.held() == {"A": 1, "B": 1, "C": 1}


def test_a_refused_park_pauses_nothing():
    sched, parking = scheduler(num_slots=2), Parking()
    running(sched, parking, ("a0", "A", 4), ("a1", "A", 4))
    sched.add(b := seq("b", "B"))
    parking.refuse = True
    plan = sched.schedule(lambda s: None, parking.park, parking.resume)
    assert not sched.paused and b.status is Status.WAITING and len(plan.decode) == 2
    check_books(sched)


def test_preemption_off_and_the_cap_on_paused_sequences():
    sched, parking = scheduler(num_slots=4, max_paused=1), Parking()
    running(sched, parking, *[(f"a{i}", "A", i) for i in range(4)])
    for i in range(3):
        sched.add(seq(f"b{i}", "B"))
    sched.preempt = False
    sched.schedule(lambda s: None, parking.park, parking.resume)
    assert not sched.paused
    sched.preempt = True
    sched.schedule(lambda s: None, parking.park, parking.resume)
    assert parking.parked == ["a3"] and sched.held() == {"A": 3, "B": 1}  # not 2 and 2: the cap
    check_books(sched)


@settings(max_examples=80, deadline=None)
@given(
    slots=st.integers(1, 6),
    events=st.lists(st.one_of(st.tuples(st.just("add"), st.sampled_from("ABC")),
                              st.tuples(st.just("end"), st.integers(0, 10))), max_size=40),
)
def test_shares_settle_after_every_step(slots, events):
    """Arrivals and ends in any order: the books balance, and after each step either a waiting
    tenant has nothing to take (every slot held, no tenant two slots over it, or the cap on
    paused sequences reached) or nothing waits."""
    from promptcache.engine.slot_shares import preemption_victim

    sched, parking = scheduler(num_slots=slots), Parking()
    for n, (kind, arg) in enumerate(events):
        if kind == "add":
            sched.add(seq(f"r{n}", arg))
        elif sched.running:
            s = sched.running[arg % len(sched.running)]
            sched.remove(s)
            sched.free_slot(s)
        sched.schedule(lambda s: None, parking.park, parking.resume)
        check_books(sched)
        if sched.waiting or sched.paused:
            assert not sched.free_slots
            if len(sched.paused) < sched.max_paused:
                assert preemption_victim(sched._candidates(), sched.running, sched.held(), slots) is None
        for s in list(sched.prefilling):  # every prefill ends in its step
            sched.prefill_done(s)
        for s in sched.running:
            s.output_ids.append(1)


# -- chunk sizing -------------------------------------------------------------------------------

assert (GRID, MIN_ROWS) == (16, 16), "the table below is written for these values"

# name -> (prefill_chunk, max_prefill_chunk, others running, computed so far, prompt, expected size)
CHUNK_CASES = {
    "idle: large chunk, cut to the grid": (100, 300, False, 0, 1000, 288),
    "running: small chunk, cut to the grid": (100, 300, True, 0, 1000, 96),
    "after a hit: ends on the grid": (100, 300, True, 48, 1000, 96),
    "too close to the grid: not cut": (20, 300, True, 65, 1000, 20),
    "whole short prompt": (100, 300, False, 0, 50, 50),
    "short tail joins the chunk": (64, 300, True, 0, 70, 70),
    "tail of exactly MIN_ROWS stays": (64, 300, True, 0, 80, 64),
    "rest of the prompt": (64, 300, True, 128, 150, 22),
    "rest shorter than MIN_ROWS": (64, 300, True, 144, 150, 6),
    "cut on the grid, then the tail joins": (100, 300, True, 0, 70, 70),
    "chunk already on the grid": (128, 2048, True, 0, 1000, 128),
}


@pytest.mark.parametrize("name", CHUNK_CASES)
def test_chunk_size(name):
    chunk, max_chunk, running, computed, prompt, expected = CHUNK_CASES[name]
    sched = scheduler(prefill_chunk=chunk, max_prefill_chunk=max_chunk)
    if running:
        sched.running.append(seq("other"))
    s = seq("s", prompt_len=prompt)
    s.num_computed = computed
    assert sched.chunk_size(s) == expected


@settings(max_examples=200, deadline=None)
@given(
    chunk=st.integers(MIN_ROWS, 600),
    running=st.booleans(),
    cached_blocks=st.integers(0, 40),
    prompt=st.integers(1, 3000),
)
def test_chunks_cover_the_prompt_on_the_grid_without_short_tails(chunk, running, cached_blocks, prompt):
    sched = scheduler(prefill_chunk=chunk, max_prefill_chunk=2048)
    if running:
        sched.running.append(seq("other"))
    size = chunk if running else 2048
    s = seq("s", prompt_len=prompt)
    s.num_computed = start = min(cached_blocks * 16, max(0, prompt - MIN_ROWS))
    ends = []
    while s.num_computed < prompt:
        n = sched.chunk_size(s)
        begin, end = s.num_computed, s.num_computed + n
        assert n >= 1 and end <= prompt
        assert n < size + MIN_ROWS  # at most a short tail more than asked for
        if prompt - start >= MIN_ROWS:
            assert n >= MIN_ROWS  # no chunk, and so no tail, has fewer rows
        if end != prompt and end % GRID:
            # off the grid only where cutting to it would have left a chunk under MIN_ROWS
            assert end - end % GRID - begin < MIN_ROWS
        ends.append(end)
        s.num_computed = end
    assert ends and ends[-1] == prompt and ends == sorted(set(ends))

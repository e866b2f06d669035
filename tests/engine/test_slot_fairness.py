"""Slots shared between tenants, on the tiny model, counted in engine steps (no clock).

Tenant A fills every slot with long generations and queues as many again; tenant B then sends
one request. B must get a slot within a step or two (a generation of A is paused for it), not
after A's generations end; and the paused generation, resumed from its parked KV, must produce
exactly the tokens it produces without contention (greedy, bfloat16: batch-invariant on CPU).
"""

from __future__ import annotations

import random

import pytest
import torch

from promptcache.engine.api import CacheOptions, Request, SamplingParams
from tests.engine.helpers import tiny_engine

SLOTS = 8
A_TOKENS = 24  # each of A's generations: far more steps than B may wait
B_TOKENS = 6
SHORT = 12  # where a test needs a pause, not long generations


def prompt(name: str, length: int = 40) -> list[int]:
    rng = random.Random(name)
    return [rng.randrange(200, 40_000) for _ in range(length)]


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return tiny_engine(tiny_llama_dir, dtype=torch.bfloat16, max_batch_size=SLOTS)


def request(name: str, tenant: str, max_tokens: int) -> Request:
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    return Request(name, prompt(name), params, CacheOptions(tenant=tenant, salt=name))


class Run:
    """Steps an engine, recording each request's tokens and the step of its first token."""

    def __init__(self, engine):
        self.engine = engine
        self.steps = 0
        self.tokens: dict[str, list[int]] = {}
        self.first_step: dict[str, int] = {}
        self.finish: dict[str, str] = {}

    def add(self, req: Request) -> None:
        self.tokens[req.request_id] = []
        self.engine.add_request(req)

    def step(self) -> None:
        self.steps += 1
        for out in self.engine.step():
            if out.new_token_ids and out.request_id not in self.first_step:
                self.first_step[out.request_id] = self.steps
            self.tokens[out.request_id] += out.new_token_ids
            if out.finished:
                self.finish[out.request_id] = out.finish_reason

    def until(self, done, max_steps: int = 1000) -> None:
        for _ in range(max_steps):
            if done():
                return
            self.step()
        raise AssertionError("the engine did not get there")

    def drain(self) -> None:
        self.until(lambda: not self.engine.has_unfinished())


A_NAMES = [f"a{i}" for i in range(2 * SLOTS)]


def a_fills_the_slots(run: Run, names: list[str] = A_NAMES, tokens: int = A_TOKENS) -> int:
    """Tenant A sends its generations; steps until they hold every slot. Returns the step."""
    for name in names:
        run.add(request(name, "A", tokens))
    run.until(lambda: len(run.engine.scheduler.running) == SLOTS)
    return run.steps


@pytest.fixture(scope="module")
def alone(engine) -> dict[str, list[int]]:
    """Every request's tokens without contention: A's 16 by themselves, and B by itself."""
    run = Run(engine)
    for name in A_NAMES:
        run.add(request(name, "A", A_TOKENS))
    run.drain()
    run.add(request("b", "B", B_TOKENS))
    run.drain()
    return run.tokens


def test_b_gets_a_slot_within_a_step_and_a_resumes_bit_for_bit(engine, alone):
    """A's 16 generations fill the 8 slots; then B sends one request."""
    before = engine.scheduler.preemptions
    run = Run(engine)
    b_sent = a_fills_the_slots(run)
    run.add(request("b", "B", B_TOKENS))
    run.drain()
    assert run.first_step["b"] - b_sent <= 2  # A's generations run for 24 steps
    assert engine.scheduler.preemptions - before >= 1
    assert run.tokens == alone  # the paused generation resumed exactly where it stopped
    assert set(run.finish.values()) == {"length"}
    assert len(engine.scheduler.free_slots) == SLOTS and not engine.scheduler.paused


def test_without_preemption_b_waits_for_an_a_generation_to_end(engine):
    """The same traffic with preemption off: the case above could fail. (Stopped at B's first
    token: the rest is the run above.)"""
    engine.scheduler.preempt = False
    try:
        run = Run(engine)
        b_sent = a_fills_the_slots(run)
        run.add(request("b", "B", B_TOKENS))
        run.until(lambda: "b" in run.first_step)
    finally:
        engine.scheduler.preempt = True
    assert run.first_step["b"] - b_sent >= A_TOKENS // 2
    for name in run.tokens.keys() - run.finish.keys():
        engine.abort_request(name)
    run.drain()


def test_a_tenant_with_a_backlog_gets_its_share_and_no_more(engine):
    """B sends 6 requests against A's 16: B takes slots up to its share (4 of 8) at once, and
    while both have work waiting neither holds more than its share."""
    run = Run(engine)
    a_fills_the_slots(run, tokens=SHORT)
    for i in range(6):
        run.add(request(f"b{i}", "B", SHORT))
    shares = []
    while engine.has_unfinished():
        run.step()
        sched = engine.scheduler
        if any(s.tenant == "A" for s in [*sched.waiting, *sched.paused]) and any(
                s.tenant == "B" for s in sched.waiting):
            shares.append(sched.held())
    assert shares[0] == {"A": 4, "B": 4}  # the step B's requests came in
    assert all(held.get("A", 0) <= 4 and held.get("B", 0) <= 4 for held in shares)
    assert len(engine.scheduler.free_slots) == SLOTS and not engine.scheduler.paused


def test_a_paused_generation_can_be_aborted(engine):
    run = Run(engine)
    a_fills_the_slots(run, A_NAMES[:SLOTS], SHORT)
    run.add(request("b", "B", SHORT))
    run.until(lambda: engine.scheduler.paused)
    paused = engine.scheduler.paused[0]
    engine.abort_request(paused.request_id)
    run.drain()
    assert run.finish.pop(paused.request_id) == "abort" and paused.parked is None
    assert set(run.finish.values()) == {"length"}
    assert len(engine.scheduler.free_slots) == SLOTS and not engine.scheduler.paused


def test_a_failed_resume_fails_that_request_alone(engine, alone):
    run = Run(engine)
    a_fills_the_slots(run, A_NAMES[:SLOTS])
    run.add(request("b", "B", B_TOKENS))
    run.until(lambda: engine.scheduler.paused)
    paused = engine.scheduler.paused[0]
    paused.parked = torch.empty(0)  # a parked copy that is no KV: the copy back raises
    run.drain()
    assert run.finish.pop(paused.request_id) == "error"
    assert all(run.tokens[name] == alone[name] for name in run.finish)
    assert len(engine.scheduler.free_slots) == SLOTS and not engine.scheduler.paused

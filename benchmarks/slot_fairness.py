"""Slot shares between tenants, in the engine: tenant B's latency beside tenant A's long generations.

Tenant A sends `--a-requests` greedy generations of `--a-tokens` tokens each (ignore_eos) to an
engine with `--slots` slots; once A holds every slot, tenant B sends one request of `--b-tokens`.
Reported, for B alone and for B beside A with preemption on and off: B's time to first token and
total time (from B's send), A's makespan, and the pauses made. Also the cost of one pause and
resume (copying a sequence's KV out of its slot and back) at several lengths.

    python benchmarks/slot_fairness.py                 # SmolLM2, bfloat16, CPU
    python benchmarks/slot_fairness.py --device cuda --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import machine  # noqa: E402
from promptcache.engine.api import CacheOptions, Request, SamplingParams  # noqa: E402
from promptcache.engine.engine import Engine  # noqa: E402
from promptcache.engine.sequence import Sequence  # noqa: E402


def prompt(engine: Engine, text: str) -> list[int]:
    return engine.tokenizer.encode(text)


def timed_run(engine: Engine, args, with_a: bool, preempt: bool, tag: str) -> dict:
    """Step the engine until everything ends; B's first-token and end times from its send."""
    engine.scheduler.preempt = preempt
    pauses = engine.scheduler.preemptions
    salt = f"{tag}-{time.monotonic_ns()}"  # a cold cache for every run
    params_a = SamplingParams(max_tokens=args.a_tokens, ignore_eos=True)
    if with_a:
        for i in range(args.a_requests):
            text = f"Write a long story about lighthouse number {i}."
            engine.add_request(Request(f"a{i}", prompt(engine, text), params_a, CacheOptions(tenant="A", salt=salt)))
    start = time.perf_counter()
    while with_a and len(engine.scheduler.running) < args.slots and (engine.num_waiting() or engine.scheduler.prefilling):
        engine.step()
    b_sent = time.perf_counter()
    b = Request("b", prompt(engine, "Name a colour."), SamplingParams(max_tokens=args.b_tokens, ignore_eos=True),
                CacheOptions(tenant="B", salt=salt))
    engine.add_request(b)
    b_first = b_done = a_done = None
    while engine.has_unfinished():
        for out in engine.step():
            now = time.perf_counter()
            if out.request_id == "b":
                b_first = b_first or now
                b_done = now if out.finished else b_done
            elif out.finished:
                a_done = now
    engine.scheduler.preempt = True
    result = {"b_ttft_s": b_first - b_sent, "b_total_s": b_done - b_sent,
              "a_makespan_s": (a_done - start) if with_a else None,
              "pauses": engine.scheduler.preemptions - pauses}
    print(tag, result, file=sys.stderr, flush=True)  # progress: a run on a busy CPU takes minutes
    return result


def pause_cost(engine: Engine, lengths: list[int]) -> dict:
    """Seconds to park and resume one sequence's KV of each length (best of 5)."""
    costs = {}
    for n in lengths:
        seq = Sequence(Request("x", [1] * n), detokenizer=None, generator=None, slot=0)
        seq.output_ids = [1]  # `length - 1` positions hold KV: the prompt's n

        def round_trip(seq=seq):
            assert engine._park(seq)
            seq.slot = 1
            engine._resume(seq, [])
            seq.slot = 0

        costs[n] = machine.best_time(round_trip, engine.model.device, repeats=5)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF file or HF directory (default: embedded SmolLM2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--a-requests", type=int, default=16)
    parser.add_argument("--a-tokens", type=int, default=128)
    parser.add_argument("--b-tokens", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    engine = Engine.from_model(args.model, device=args.device, dtype=args.dtype, max_batch_size=args.slots)
    timed_run(engine, argparse.Namespace(**{**vars(args), "a_requests": args.slots, "a_tokens": 2 * args.slots}),
              with_a=True, preempt=True, tag="warm-up")
    report = {
        "model": engine.model_name, "device": args.device, "dtype": args.dtype, "slots": args.slots,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "a": f"{args.a_requests} x {args.a_tokens} tokens", "b": f"1 x {args.b_tokens} tokens",
        "b_alone": timed_run(engine, args, with_a=False, preempt=True, tag="alone"),
        "beside_a_preempt_off": timed_run(engine, args, with_a=True, preempt=False, tag="off"),
        "beside_a_preempt_on": timed_run(engine, args, with_a=True, preempt=True, tag="on"),
        "pause_and_resume_s": pause_cost(engine, [256, 1024, 2048]),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['model']} {args.dtype} on {args.device}, {args.slots} slots, {report['machine']}")
    print(f"A: {report['a']}, B: {report['b']}")
    print("| B | TTFT s | total s | A's makespan s | pauses |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in ("b_alone", "beside_a_preempt_off", "beside_a_preempt_on"):
        r = report[name]
        makespan = "" if r["a_makespan_s"] is None else f"{r['a_makespan_s']:.2f}"
        print(f"| {name} | {r['b_ttft_s']:.3f} | {r['b_total_s']:.3f} | {makespan} | {r['pauses']} |")
    for n, seconds in report["pause_and_resume_s"].items():
        print(f"pause + resume of {n} tokens: {seconds * 1e3:.2f} ms")


if __name__ == "__main__":
    main()

"""Prefix-cache benchmarks: hashing, lookup, insert (with and without eviction), sharing, memory.

    .venv/bin/python benchmarks/prefix.py                 # every section, as a table
    .venv/bin/python benchmarks/prefix.py lookup insert   # some sections
    .venv/bin/python benchmarks/prefix.py --json          # machine-readable
    .venv/bin/python benchmarks/prefix.py ttft --shape llama-3.1-8b --device cuda   # on a GPU

Each section is a function returning rows; `SECTIONS` maps names to them, so engine sections
(warm/cold time-to-first-token) can be added beside these. Importing this module needs no torch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xxhash import xxh3_128_digest  # noqa: E402

from promptcache.cache import CacheConfig, Namespace, PrefixCache  # noqa: E402
from promptcache.cache.keys import pack_tokens  # noqa: E402

BLOCK_SIZE = 16
BLOCK_NBYTES = 2 * 16 * 2 * 8 * 64 * 2  # a 16-token KV block of a small Llama: 2 (K,V) x layers x heads x dim x bf16
PROMPT = 8192
NS = Namespace(model="bench@bf16")

Row = dict  # {"section", "name", "value", "unit", "target"}


def row(section: str, name: str, value: float, unit: str, target: str = "") -> Row:
    return {"section": section, "name": name, "value": round(value, 4), "unit": unit, "target": target}


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Milliseconds per call of `fn`, `repeat` times."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def prompt(seed: int, length: int = PROMPT) -> list[int]:
    base = seed * 1_000_003
    return [(base + i) % 2**31 for i in range(length)]


class Pool:
    """A stand-in for the engine's KV pool: payload ids only."""

    def __init__(self) -> None:
        self.next = 0
        self.freed = 0

    def store(self, index: int) -> int:
        self.next += 1
        return self.next

    def free(self, payload: object) -> None:
        self.freed += 1


def filled_cache(blocks: int, capacity_blocks: int, policy: str = "lru") -> tuple[PrefixCache, Pool]:
    pool = Pool()
    # One tenant: it may use the whole cache (the default share is for caches shared by tenants).
    config = CacheConfig(block_size=BLOCK_SIZE, max_bytes=capacity_blocks * BLOCK_NBYTES, policy=policy,
                         default_tenant_share=1.0)
    cache = PrefixCache(config, BLOCK_NBYTES, on_evict=pool.free)
    seed = 10_000
    while len(cache) < blocks:
        cache.insert(prompt(seed, min(PROMPT, (blocks - len(cache)) * BLOCK_SIZE)), NS, pool.store)
        seed += 1
    return cache, pool


# ------------------------------------------------------------------ sections


def section_hash(repeat: int) -> list[Row]:
    packed = pack_tokens(prompt(1))
    step = BLOCK_SIZE * 4
    chunks = [packed[i : i + step] for i in range(0, len(packed), step)]

    def xxh3() -> None:
        key = b"\0" * 16
        for chunk in chunks:
            key = xxh3_128_digest(key + chunk)

    def blake2b() -> None:
        key = b"\0" * 16
        for chunk in chunks:
            key = hashlib.blake2b(key + chunk, digest_size=16).digest()

    tokens = prompt(1)
    return [
        row("hash", "pack 8,192 tokens", statistics.median(timed(lambda: pack_tokens(tokens), repeat)), "ms"),
        row("hash", "chain 512 blocks, xxh3_128 (used)", statistics.median(timed(xxh3, repeat)), "ms"),
        row("hash", "chain 512 blocks, blake2b-128", statistics.median(timed(blake2b, repeat)), "ms"),
    ]


def section_lookup(repeat: int) -> list[Row]:
    cache, pool = filled_cache(10_000, 20_000)
    stored = prompt(10_000)  # fully cached: the worst case, every block hashed and compared
    miss = prompt(1)

    def lookup(tokens: list[int]) -> Callable[[], None]:
        return lambda: cache.release(cache.match(tokens, NS))

    hit_ms = timed(lookup(stored), repeat)
    assert cache.peek(stored, NS) == 512
    return [
        row("lookup", f"8,192-token hit (512 blocks) in {len(cache):,} blocks, median", statistics.median(hit_ms), "ms", "<= 0.5"),
        row("lookup", "8,192-token hit, p90", sorted(hit_ms)[int(0.9 * len(hit_ms))], "ms"),
        row("lookup", "8,192-token miss, median", statistics.median(timed(lookup(miss), repeat)), "ms"),
    ]


def section_insert(repeat: int) -> list[Row]:
    rows = []
    for label, capacity, held in [("no eviction", 10_000 + 512 * (repeat + 1), 10_000),
                                  ("evicting 512 blocks per insert", 10_000, 10_000),
                                  ("evicting 512 blocks per insert, 100k held", 100_000, 100_000)]:
        cache, pool = filled_cache(held, capacity)
        prompts = iter([prompt(seed) for seed in range(repeat)])  # built before the clock starts
        samples = timed(lambda: cache.insert(next(prompts), NS, pool.store), repeat)
        rows.append(row("insert", f"new 8,192-token prompt, {label}, median", statistics.median(samples), "ms", "<= 1"))
        rows.append(row("insert", f"  same, mean (includes cyclic-GC pauses)", statistics.mean(samples), "ms"))
        assert pool.freed == (0 if label == "no eviction" else 512 * repeat)
    return rows


def section_sharing(repeat: int) -> list[Row]:
    cache, pool = filled_cache(0, 20_000)
    stored = prompt(1)
    cache.insert(stored, NS, pool.store)
    shares_8000 = stored[:8000] + prompt(2, 192)
    system = prompt(3, 1000)
    cache.insert(system + prompt(4, 500), NS, pool.store)
    results = []
    for name, tokens, expected in [("shares 8,000 of 8,192 tokens", shares_8000, 8000),
                                   ("shares a 1,000-token system prompt", system + prompt(5, 500), 992)]:
        match = cache.match(tokens, NS)
        cache.release(match)
        assert match.num_tokens == expected, (name, match.num_tokens, expected)
        results.append(row("sharing", f"{name}: cached tokens found", match.num_tokens, "tokens", f"== {expected}"))
    return results


def section_memory(repeat: int) -> list[Row]:
    cache, pool = filled_cache(0, 100_000)
    system = prompt(7, 1000)
    distinct: set[tuple[int, ...]] = set()
    for i in range(50):
        tokens = system + prompt(100 + i, 300)
        cache.insert(tokens, NS, pool.store)
        distinct.update(tuple(tokens[: (b + 1) * BLOCK_SIZE]) for b in range(len(tokens) // BLOCK_SIZE))
    naive = 50 * (1300 // BLOCK_SIZE)
    return [
        row("memory", "blocks held (50 prompts, shared 1,000-token system prompt)", len(cache), "blocks"),
        row("memory", "distinct full-block prefixes", len(distinct), "blocks"),
        row("memory", "bytes_held / (distinct blocks x block_nbytes)", cache.bytes_held() / (len(distinct) * BLOCK_NBYTES), "ratio", "== 1.0"),
        row("memory", "blocks held / blocks without sharing", len(cache) / naive, "ratio"),
    ]


def section_ttft(args: argparse.Namespace) -> list[Row]:
    from benchmarks.prefix_engine import section_ttft as run  # torch only for this section

    return run(args)


# Each section takes the parsed arguments (cache-only sections read just --repeat).
SECTIONS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "hash": lambda a: section_hash(a.repeat),
    "lookup": lambda a: section_lookup(a.repeat),
    "insert": lambda a: section_insert(a.repeat),
    "sharing": lambda a: section_sharing(a.repeat),
    "memory": lambda a: section_memory(a.repeat),
    "ttft": section_ttft,
}
ENGINE_SECTIONS = ("ttft",)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", choices=[[], *SECTIONS], help="sections to run (default: all)")
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per measurement")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    parser.add_argument("--no-engine", action="store_true", help="skip the engine sections (no torch)")
    if "--no-engine" not in (argv or sys.argv):
        from benchmarks.prefix_engine import add_arguments

        add_arguments(parser)
    args = parser.parse_args(argv)
    names = args.sections or [n for n in SECTIONS if not (args.no_engine and n in ENGINE_SECTIONS)]
    rows = [r for name in names for r in SECTIONS[name](args)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["name"]) for r in rows)
        print(f"{'section':8}  {'measurement':{width}}  {'value':>10}  {'unit':6}  target")
        for r in rows:
            print(f"{r['section']:8}  {r['name']:{width}}  {r['value']:>10}  {r['unit']:6}  {r['target']}")
    return rows


if __name__ == "__main__":
    main()

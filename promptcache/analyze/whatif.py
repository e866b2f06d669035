"""The what-if grid: the same traffic replayed through the prefix cache under other settings.

Four sweeps, each a series of `cache.replay.replay` runs over the same rendered prompts:

- the headline: the chosen size, policy and block size on one replica (the top-level
  `hit_ratio`);
- cache size x eviction policy (LRU, LFU, role tiers, TTL): the token hit-ratio curves;
- block size, at the chosen cache size;
- replicas (each with the chosen cache size) under random and prefix-aware routing.

Sizes default to fractions of the footprint of the whole log (every distinct block held at
once), so the curve always spans "too small to matter" to "everything fits". Replays are
independent, so they run in worker processes (forked: they inherit the hashed prompts).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from promptcache.cache.config import CacheConfig
from promptcache.cache.keys import Namespace
from promptcache.cache.policies import POLICIES
from promptcache.cache.replay import HashedPromptKeys, ReplayItem, ReplayResult, replay

MIB = 2**20
SIZE_FRACTIONS = (1 / 64, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
BLOCK_SIZES = (8, 16, 32, 64)
REPLICAS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Traffic:
    """Rendered requests: tokens, per-token roles, time, tenant."""

    tokens: list[list[int]]
    roles: list[list[str]]
    at: list[float]
    tenants: list[str]
    model: str  # the namespace's model field: the weights' fingerprint


@dataclass(frozen=True)
class Settings:
    cache_mb: float = 256.0
    policy: str = "lru"
    block_size: int = 16
    ttl_s: float = 300.0  # the TTL policy's time-to-live
    kv_bytes_per_token: int = 9216
    sizes_mb: tuple[float, ...] | None = None  # None: fractions of the footprint
    policies: tuple[str, ...] = tuple(POLICIES)
    block_sizes: tuple[int, ...] = BLOCK_SIZES
    replicas: tuple[int, ...] = REPLICAS
    seed: int = 0
    min_computed: int = 1  # prompt tokens the engine always computes after a hit (cache/reusable.py)
    jobs: int | None = None  # worker processes (None: one per CPU)


@dataclass
class Grid:
    headline: ReplayResult
    footprint_bytes: int  # every distinct block of the log at the chosen block size
    items: list[ReplayItem] = field(default_factory=list)  # the prompts hashed at the chosen block size
    curves: dict[str, list[tuple[float, ReplayResult]]] = field(default_factory=dict)  # policy -> (MiB, result)
    block_sizes: list[tuple[int, ReplayResult]] = field(default_factory=list)
    replicas: list[tuple[int, str, ReplayResult]] = field(default_factory=list)


@dataclass(frozen=True)
class _Run:
    mb: float
    policy: str
    block_size: int
    replicas: int = 1
    routing: str = "random"


def _items(traffic: Traffic, block_size: int, block_roles: Callable) -> list[ReplayItem]:
    spaces = {t: Namespace(traffic.model, t) for t in set(traffic.tenants)}
    out = []
    for tokens, roles, at, tenant in zip(traffic.tokens, traffic.roles, traffic.at, traffic.tenants):
        keys = HashedPromptKeys(tokens, spaces[tenant], block_size)
        out.append(ReplayItem(keys, block_roles(roles, keys.num_blocks, block_size), at))
    return out


# What forked workers inherit: set by run_grid before the pool starts.
_WORK: dict = {}


def _replay(run: _Run) -> ReplayResult:
    traffic, settings, block_roles, items = _WORK["traffic"], _WORK["settings"], _WORK["block_roles"], _WORK["items"]
    if run.block_size not in items:
        items[run.block_size] = _items(traffic, run.block_size, block_roles)
    share = 1.0 if len(set(traffic.tenants)) <= 1 else 0.5  # as the server: one tenant may use the whole cache
    config = CacheConfig(block_size=run.block_size, max_bytes=int(run.mb * MIB), policy=run.policy,
                         default_ttl_s=settings.ttl_s if run.policy == "ttl" else None, default_tenant_share=share)
    return replay(items[run.block_size], config, settings.kv_bytes_per_token * run.block_size,
                  replicas=run.replicas, routing=run.routing, seed=settings.seed, min_computed=settings.min_computed)


def footprint_blocks(items: Sequence[ReplayItem]) -> int:
    """Distinct full blocks in the traffic: what a cache holding everything would hold."""
    seen: set[bytes] = set()
    for item in items:
        keys = item.keys
        seen.update(keys.key(b) for b in range(keys.num_blocks))
    return len(seen)


def run_grid(traffic: Traffic, settings: Settings, block_roles: Callable,
             progress: Callable[[str], None] = lambda step: None) -> Grid:
    bs = settings.block_size
    progress("hashing blocks")
    items = {bs: _items(traffic, bs, block_roles)}
    footprint = footprint_blocks(items[bs]) * settings.kv_bytes_per_token * bs
    sizes = settings.sizes_mb or tuple(max(footprint * f / MIB, 0.01) for f in SIZE_FRACTIONS)
    runs = [_Run(settings.cache_mb, settings.policy, bs)]
    runs += [_Run(mb, policy, bs) for policy in settings.policies for mb in sizes]
    runs += [_Run(settings.cache_mb, settings.policy, b) for b in settings.block_sizes]
    runs += [_Run(settings.cache_mb, settings.policy, bs, n, routing)
             for n in settings.replicas for routing in (("random", "prefix") if n > 1 else ("random",))]
    _WORK.update(traffic=traffic, settings=settings, block_roles=block_roles, items=items)
    results: dict[_Run, ReplayResult] = {}
    todo = list(dict.fromkeys(runs))
    jobs = min(settings.jobs or os.cpu_count() or 1, len(todo))
    try:
        if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
                for done, (run, result) in enumerate(zip(todo, pool.map(_replay, todo)), 1):
                    results[run] = result
                    progress(f"replays {done}/{len(todo)}")
        else:
            for done, run in enumerate(todo, 1):
                results[run] = _replay(run)
                progress(f"replays {done}/{len(todo)}")
    finally:
        _WORK.clear()
    grid = Grid(results[runs[0]], footprint, items[bs])
    for policy in settings.policies:
        grid.curves[policy] = [(mb, results[_Run(mb, policy, bs)]) for mb in sizes]
    grid.block_sizes = [(b, results[_Run(settings.cache_mb, settings.policy, b)]) for b in settings.block_sizes]
    grid.replicas = [(n, routing, results[_Run(settings.cache_mb, settings.policy, bs, n, routing)])
                     for n in settings.replicas for routing in (("random", "prefix") if n > 1 else ("random",))]
    return grid


def memory_for(curve: list[tuple[float, ReplayResult]], share: float) -> float | None:
    """The smallest size on `curve` whose hit ratio reaches `share` of the curve's best (MiB)."""
    best = max((r.hit_ratio for _, r in curve), default=0.0)
    if best <= 0:
        return None
    return min(mb for mb, r in curve if r.hit_ratio >= share * best)

"""Several generations for one HTTP request: `n` choices per prompt and batched prompts.

The choices of one prompt share its prefill through the cache: the first is submitted alone,
and the others only once it has produced its first token, when its prompt's blocks are in the
cache. They then read every reusable block instead of computing the prompt n times. Usage
counts each prompt once (as OpenAI does): its prompt and cached tokens are the first choice's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from fastapi import Request as HTTPRequest

from promptcache.engine.api import INT64_MIN
from promptcache.server.core.spec import GenerationSpec
from promptcache.server.core.usage import TokenUsage
from promptcache.server.generation import Generation, start
from promptcache.server.state import ServerState


def choice_seed(seed: int, j: int) -> int:
    """Choice j's seed: seed + j, wrapped around within int64 (INT64_MAX + 1 is INT64_MIN), so
    that every valid seed gives every choice a valid one."""
    return (seed + j - INT64_MIN) % 2**64 + INT64_MIN


def choice_specs(spec: GenerationSpec, n: int, first_index: int) -> list[GenerationSpec]:
    """`spec` as n choices; a seeded request gets seeds seed, seed + 1, ... so choices differ."""
    out = []
    for j in range(n):
        seed = spec.sampling.seed
        sampling = replace(spec.sampling, seed=None if seed is None else choice_seed(seed, j))
        out.append(replace(spec, request_id=f"{spec.request_id}-{first_index + j}", sampling=sampling))
    return out


async def start_shared(state: ServerState, groups: list[list[GenerationSpec]], *, http_id: str, arrived: float,
                       http: HTTPRequest) -> list[Generation]:
    """Start every group's first spec, then, once it has its first token, the rest of its group.
    Returns the generations in order (group by group); on any failure all are aborted."""
    started: list[list[Generation]] = []
    try:
        for group in groups:
            started.append([start(state, group[0], http_id=http_id, arrived=arrived)])
        for gens, group in zip(started, groups):
            if len(group) > 1:
                await gens[0].started(http)
                gens += [start(state, spec, http_id=http_id, arrived=arrived) for spec in group[1:]]
    except BaseException:
        for gen in (g for gens in started for g in gens):
            state.loop.abort(gen.sub.request_id)
        raise
    return [g for gens in started for g in gens]


async def collect_all(gens: list[Generation], http: HTTPRequest) -> list[str]:
    """Every choice's text; the first failure (or ClientGone) cancels, and so aborts, the rest."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(gen.collect(http)) for gen in gens]
    except BaseExceptionGroup as failed:  # the route's handlers know the failure, not the group
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def shared_usage(leaders: list[Generation], gens: list[Generation]) -> TokenUsage:
    return TokenUsage(sum(g.usage.prompt for g in leaders), sum(g.usage.cached for g in leaders),
                      sum(g.usage.completion for g in gens))


async def merged(streams: list[AsyncIterator[str]]) -> AsyncIterator[str]:
    """The events of several streams as they come; closing this closes them all (aborting
    their generations)."""
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(stream: AsyncIterator[str]) -> None:
        try:
            async for event in stream:
                await queue.put(event)
        finally:
            await queue.put(end)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        remaining = len(tasks)
        while remaining:
            event = await queue.get()
            if event is end:
                remaining -= 1
            else:
                yield event
    finally:
        for task in tasks:
            task.cancel()

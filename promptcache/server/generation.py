"""One generation request through the engine loop: submit a neutral `GenerationSpec`, then
either collect the whole result or stream it, aborting the moment the client goes away.

Dialects differ only in how the prompt is made and how a reply or an event is shaped; sampling,
cache options, disconnects and accounting are here, once, and know no dialect's field names.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from promptcache.engine.api import CacheOptions, Request, RequestOutput, SamplingParams
from promptcache.server.core.spec import GenerationSpec, cache_options, sampling_params
from promptcache.server.core.sse import SSE_HEADERS
from promptcache.server.core.usage import TokenUsage, reusable_prefix
from promptcache.server.engine_loop import EngineFailure, QueueFullError, Submission, TenantLimitError
from promptcache.server.errors import APIError, queue_full, server_error, tenant_limit
from promptcache.server.hit_sources import tier_counts
from promptcache.server.logs import log_event
from promptcache.server.state import ServerState

log = logging.getLogger("promptcache.server")

DISCONNECT_POLL_S = 0.25
# 499 is the de-facto status for "client closed request"; nobody reads it, but logs do.
CLIENT_CLOSED = 499


class ClientGone(Exception):
    """The client disconnected before its (non-streaming) result was ready."""


@dataclass
class Generation:
    """One admitted request and what has been learned about it so far."""

    state: ServerState
    spec: GenerationSpec
    sub: Submission
    http_id: str  # the HTTP request's id, in logs and in a 5xx message
    last: RequestOutput | None = None
    early: object = None  # the first queue item, taken by `started()` before `outputs()` runs
    token_ids: list[int] = field(default_factory=list)  # every generated token so far
    logprobs: list = field(default_factory=list)  # with logprobs asked for: each generated token's
    prompt_logprobs: list | None = None  # with prompt logprobs asked for: one per prompt token

    @property
    def endpoint(self) -> str:
        return self.spec.endpoint

    @property
    def tenant(self) -> str:
        return self.spec.tenant

    @property
    def prompt_text(self) -> str | None:
        return self.spec.prompt_text

    @property
    def usage(self) -> TokenUsage:
        last = self.last
        assert last is not None
        return TokenUsage(last.num_prompt_tokens, last.num_cached_tokens, last.num_generated_tokens,
                          written=self.written(last.num_cached_tokens))

    def reusable_end(self) -> int:
        """How many leading prompt tokens this request leaves in the cache for a later one to
        read: every full block short of the last token, which the engine always computes
        (cache/reusable.py). 0 with the cache off for it."""
        if not (self.state.settings.cache_enabled and self.spec.cache.enabled):
            return 0
        return reusable_prefix(len(self.spec.tokens), self.state.settings.block_size)

    def written(self, cached: int) -> dict[str, int]:
        """Prompt tokens this request cached under its explicit breakpoints, per TTL label:
        from the end of the hit to each breakpoint's last full block, so that the same prompt
        sent again reads exactly what this one reports written. Empty without breakpoints."""
        size, start, out, end_all = self.state.settings.block_size, cached, {}, self.reusable_end()
        for position, ttl in self.spec.cache.breakpoints:
            end = min(position // size * size, end_all)
            if end > start:
                out[ttl] = out.get(ttl, 0) + end - start
                start = end
        return out

    @property
    def finish_reason(self) -> str:
        reason = self.last.finish_reason if self.last else None
        return "length" if reason == "length" else "stop"

    async def outputs(self, http: HTTPRequest | None) -> AsyncIterator[RequestOutput]:
        """Yield the engine's deltas until the request finishes.

        With `http` given (non-streaming), the connection is polled while waiting, and a
        disconnect aborts generation and raises ClientGone. Any early exit (a cancelled
        streaming response, an exception) aborts the request in the engine too.
        """
        state, sub = self.state, self.sub
        next_poll = state.clock() + DISCONNECT_POLL_S
        try:
            while True:
                # Polled on a schedule, not only when idle: while tokens flow the queue is
                # never empty for long, and a vanished client must still be noticed.
                if http is not None and state.clock() >= next_poll:
                    next_poll = state.clock() + DISCONNECT_POLL_S
                    if await http.is_disconnected():
                        raise ClientGone()
                try:
                    item = self.early or await asyncio.wait_for(sub.queue.get(), DISCONNECT_POLL_S)
                except TimeoutError:
                    continue
                self.early = None
                if isinstance(item, EngineFailure):
                    if item.refusal is not None:
                        raise item.refusal
                    raise server_error(self.http_id, code="engine_failure", status=503)
                if item.finished and item.finish_reason == "error":
                    # This request alone failed inside the engine; the log says why (engine.py).
                    log.error("request %s failed in the engine: %s", self.http_id, item.error)
                    raise server_error(self.http_id, code="engine_failure", status=500)
                now = state.clock()
                if sub.first_token_at is None and item.new_token_ids:
                    sub.first_token_at = now
                self.last = item
                self.token_ids.extend(item.new_token_ids)
                self.logprobs.extend(item.new_logprobs or ())
                if item.prompt_logprobs is not None:
                    self.prompt_logprobs = item.prompt_logprobs
                if item.finished:
                    sub.finished_at = now
                    state.finished(
                        endpoint=self.endpoint,
                        tenant=self.tenant,
                        cache_key=self.spec.cache.cache_key,
                        user=self.spec.cache.end_user,
                        http_id=self.http_id,
                        sub=sub,
                        last=item,
                        prompt_text=self.prompt_text,
                    )
                yield item
                if item.finished:
                    return
        finally:
            if self.last is None or not self.last.finished:
                state.loop.abort(sub.request_id)

    async def started(self, http: HTTPRequest) -> None:
        """Wait for the engine's first output, which says how much of the prompt the cache
        supplied, so that a stream's headers can report it. A client gone meanwhile raises
        ClientGone (the request is aborted); a failure is raised as its APIError, before any
        status line."""
        while self.early is None:
            if await http.is_disconnected():
                self.state.loop.abort(self.sub.request_id)
                raise ClientGone()
            try:
                self.early = await asyncio.wait_for(self.sub.queue.get(), DISCONNECT_POLL_S)
            except TimeoutError:
                continue
        early = self.early
        if isinstance(early, EngineFailure) or (early.finished and early.finish_reason == "error"):
            async for _ in self.outputs(None):  # raises the failure's APIError
                pass

    def cache_headers(self) -> dict[str, str]:
        """Where the prompt came from: `x-cache-hit-tokens`, `x-cache-tiers` (the hit's tokens by
        the tier that held them: blocks a lower tier promoted into memory for this request count
        as that tier's), and on a partial hit `x-cache-divergence`, the first token the cache did not
        supply (a block boundary: the prompt left the cached prefix within the block after it)."""
        out = self.last if self.last is not None else self.early
        if not isinstance(out, RequestOutput):
            return {}
        cached = out.num_cached_tokens
        tiers = tier_counts(cached, out.cached_tiers)
        headers = {**self.spec.headers, "x-cache-hit-tokens": str(cached),
                   "x-cache-tiers": ";".join(f"{tier}={n}" for tier, n in tiers.items())}
        if 0 < cached < self.reusable_end():
            headers["x-cache-divergence"] = str(cached)
        return headers

    async def collect(self, http: HTTPRequest) -> str:
        """The whole completion text (non-streaming)."""
        return "".join([out.new_text async for out in self.outputs(http)])

    async def events(self, render: Callable[[RequestOutput | None], list[str]],
                     on_error: Callable[[APIError], str], trailer: str = "") -> AsyncIterator[str]:
        """A dialect's event stream: `render(output)` gives the framed events for one delta, and
        `render(None)` those that open the stream; an error after the status line has gone out
        becomes `on_error(err)`; `trailer` closes the stream (OpenAI's `data: [DONE]`)."""
        for event in render(None):
            yield event
        try:
            async for out in self.outputs(None):
                for event in render(out):
                    yield event
        except APIError as err:  # the status line has gone out: the error is an event
            log_event(log, "error", req=self.http_id, status=err.status, code=err.code, streaming=True)
            yield on_error(err)
        if trailer:
            yield trailer


async def warm_prefix(state: ServerState, tokens: list[int], tenant: str, salt: str | None, http_id: str) -> None:
    """Prefill `tokens` once through the engine loop so their KV is in the cache (a pin can
    only hold blocks that exist). One token is generated and thrown away."""
    request = Request(
        request_id=f"warm-{uuid.uuid4().hex}",
        prompt_tokens=tokens,
        sampling=SamplingParams(max_tokens=1, temperature=0.0),
        cache=CacheOptions(tenant=tenant, salt=salt, cache_reply=False),
    )
    try:
        sub = state.loop.submit(request)
    except QueueFullError:
        raise queue_full(state.loop.max_queue) from None
    while True:
        item = await sub.queue.get()
        if isinstance(item, EngineFailure):
            raise server_error(http_id, code="engine_failure", status=503)
        if item.finished:
            return


def start(state: ServerState, spec: GenerationSpec, *, http_id: str, arrived: float) -> Generation:
    """Submit `spec` to the engine loop (raises the 400/429 APIErrors)."""
    settings = state.settings
    request = Request(
        request_id=spec.request_id,
        prompt_tokens=spec.tokens,
        sampling=sampling_params(spec.sampling, len(spec.tokens), state.engine.context_length,
                                 settings.default_max_tokens),
        cache=cache_options(spec.cache, spec.tenant, settings.isolate_by),
        token_roles=spec.roles,
        structure=spec.structure,
    )
    try:
        sub = state.loop.submit(request)
    except TenantLimitError as err:
        raise tenant_limit(err.limit, err.retry_after_s) from None
    except QueueFullError:
        raise queue_full(state.loop.max_queue) from None
    sub.submitted_at = arrived
    return Generation(state, spec, sub, http_id)


async def respond(gen: Generation, http: HTTPRequest, events: AsyncIterator[str] | None,
                  reply_for: Callable[[str], Any]) -> Response:
    """The tail every dialect shares: stream `events` when given, or collect the whole text and
    answer with `reply_for(text)` (a pydantic model or a dict); a client that went away gets
    no body."""
    try:
        if events is not None:
            await gen.started(http)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={**SSE_HEADERS, **gen.cache_headers()})
        text = await gen.collect(http)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    reply = reply_for(text)
    if inspect.isawaitable(reply):  # a dialect that stores the reply before answering
        reply = await reply
    return JSONResponse(reply if isinstance(reply, dict) else reply.model_dump(), headers=gen.cache_headers())

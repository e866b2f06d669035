"""One generation request through the engine loop: build the engine Request, then either
collect the whole result or stream it, aborting the moment the client goes away.

Chat and text completions differ only in how the prompt is made and how a chunk is shaped;
everything about sampling, cache options, disconnects and accounting is here, once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import Request as HTTPRequest

from promptcache.engine.api import CacheOptions, Request, RequestOutput, Role, SamplingParams
from promptcache.server.engine_loop import EngineFailure, QueueFullError, Submission, TenantLimitError
from promptcache.server.errors import APIError, error_body, model_not_found, queue_full, server_error, tenant_limit
from promptcache.server.logs import log_event
from promptcache.server.openai_schema import Usage, SamplingFields
from promptcache.server.state import ServerState

log = logging.getLogger("promptcache.server")

RETENTION_TTL_S = {"in_memory": None, "24h": 86_400.0}
DISCONNECT_POLL_S = 0.25


class ClientGone(Exception):
    """The client disconnected before its (non-streaming) result was ready."""


@dataclass
class Generation:
    """One admitted request and what has been learned about it so far."""

    state: ServerState
    endpoint: str
    tenant: str
    body: SamplingFields
    sub: Submission
    prompt_text: str | None
    http_id: str  # the HTTP request's id, in logs and in a 5xx message
    last: RequestOutput | None = None

    @property
    def usage(self) -> Usage:
        last = self.last
        assert last is not None
        return Usage.of(last.num_prompt_tokens, last.num_cached_tokens, last.num_generated_tokens)

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
                    item = await asyncio.wait_for(sub.queue.get(), DISCONNECT_POLL_S)
                except TimeoutError:
                    continue
                if isinstance(item, EngineFailure):
                    raise server_error(self.http_id, code="engine_failure", status=503)
                if item.finished and item.finish_reason == "error":
                    # This request alone failed inside the engine; the log says why (engine.py).
                    log.error("request %s failed in the engine: %s", self.http_id, item.error)
                    raise server_error(self.http_id, code="engine_failure", status=500)
                now = state.clock()
                if sub.first_token_at is None and item.new_token_ids:
                    sub.first_token_at = now
                self.last = item
                if item.finished:
                    sub.finished_at = now
                    state.finished(
                        endpoint=self.endpoint,
                        tenant=self.tenant,
                        cache_key=self.body.prompt_cache_key,
                        user=self.body.end_user(),
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

    async def collect(self, http: HTTPRequest) -> str:
        """The whole completion text (non-streaming)."""
        return "".join([out.new_text async for out in self.outputs(http)])

    async def sse(self, render: Callable[[RequestOutput | None], list[dict]]) -> AsyncIterator[str]:
        """Server-sent events: `render(output)` gives the chunks for one delta, and
        `render(None)` the chunks that open the stream; ends with `data: [DONE]`."""
        def event(obj: dict) -> str:
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        for chunk in render(None):
            yield event(chunk)
        try:
            async for out in self.outputs(None):
                for chunk in render(out):
                    yield event(chunk)
        except APIError as err:  # the status line has gone out: the error is an event
            log_event(log, "error", req=self.http_id, status=err.status, code=err.code, streaming=True)
            yield event(error_body(err.message, err.type, err.param, err.code))
        yield "data: [DONE]\n\n"


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


def check_model(state: ServerState, model: str) -> None:
    if model != state.engine.model_name:
        raise model_not_found(model)


def sampling_params(state: ServerState, body: SamplingFields, limit: int | None, n_prompt: int) -> SamplingParams:
    """Request fields -> SamplingParams. With no limit given the reply may fill the context,
    capped by the server's default_max_tokens (as OpenAI's default is 'up to the context')."""
    if limit is None:
        room = state.engine.context_length - n_prompt
        limit = max(1, min(state.settings.default_max_tokens, room))
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    if top_p == 0.0:  # the limit of nucleus sampling as p -> 0 is greedy
        temperature, top_p = 0.0, 1.0
    params = SamplingParams(
        max_tokens=limit,
        temperature=temperature,
        top_p=top_p,
        top_k=body.top_k or 0,
        seed=body.seed,
        stop=body.stop_strings(),
        ignore_eos=body.ignore_eos,
        skip_special_tokens=body.skip_special_tokens,
    )
    params.validate()
    return params


def namespace_salt(state: ServerState, salt: str | None, end_user: str | None) -> str | None:
    """The salt the cache sees. With --isolate-by user it is (end user, salt) as one JSON
    string, always, so that no salt a client sends can equal another user's namespace; the
    requests that name no user share one namespace of their own."""
    if state.settings.isolate_by != "user":
        return salt
    return json.dumps([end_user, salt], ensure_ascii=False)


def cache_options(state: ServerState, tenant: str, body: SamplingFields) -> CacheOptions:
    """The tenant comes from the API key, never the body; the salt partitions inside it."""
    retention = body.prompt_cache_retention or "in_memory"
    return CacheOptions(
        enabled=body.caching.enabled if body.caching is not None else True,
        tenant=tenant,
        salt=namespace_salt(state, body.cache_salt, body.end_user()),
        ttl_s=RETENTION_TTL_S[retention],
        cache_key=body.prompt_cache_key,
    )


def start(
    state: ServerState,
    *,
    endpoint: str,
    request_id: str,
    http_id: str,
    tenant: str,
    body: SamplingFields,
    tokens: list[int],
    roles: list[Role] | None,
    limit: int | None,
    prompt_text: str | None,
    arrived: float,
) -> Generation:
    """Submit the request to the engine loop (raises the 400/429 APIErrors)."""
    request = Request(
        request_id=request_id,
        prompt_tokens=tokens,
        sampling=sampling_params(state, body, limit, len(tokens)),
        cache=cache_options(state, tenant, body),
        token_roles=roles,
    )
    try:
        sub = state.loop.submit(request)
    except TenantLimitError as err:
        raise tenant_limit(err.limit, err.retry_after_s) from None
    except QueueFullError:
        raise queue_full(state.loop.max_queue) from None
    sub.submitted_at = arrived
    return Generation(state, endpoint, tenant, body, sub, prompt_text, http_id)

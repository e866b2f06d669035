"""POST /v1/chat/completions and POST /v1/completions, in OpenAI's request/response shapes.

Order of work in both: the caller was authenticated from the headers (guard.py) and the body's
size bounded (body_limit.py) before the body was parsed; then the cheap limits (limits.py);
only then the prompt is rendered and tokenized, in a worker thread so the event loop keeps
serving, and at most `render_threads` at a time so a burst of large prompts cannot take every
thread and core.
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from promptcache.engine.api import RequestOutput
from promptcache.server.chat import prompt_from_completion
from promptcache.server.errors import bad_request, unauthorized
from promptcache.server.generation import ClientGone, Generation, check_model, start
from promptcache.server.guard import CALLER
from promptcache.server.limits import check_chat, check_sampling
from promptcache.server.request_id import request_id_of
from promptcache.server.openai_schema import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    ChunkDelta,
    CompletionRequest,
    TextChoice,
    TextCompletion,
)
from promptcache.server.state import ServerState
from promptcache.server.tenants import Caller, Tenant

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# 499 is the de-facto status for "client closed request"; nobody reads it, but logs do.
CLIENT_CLOSED = 499


def server_state(http: HTTPRequest) -> ServerState:
    return http.app.state.promptcache


def caller_of(http: HTTPRequest) -> Caller:
    """The caller the guard authenticated from the headers (before the body was read)."""
    caller = http.scope.get(CALLER)
    if caller is None:  # only on public paths, which never ask
        raise unauthorized()
    return caller


def tenant_of(http: HTTPRequest) -> Tenant:
    """The caller's tenant; the admin and metrics keys are nobody's tenant (401)."""
    caller = caller_of(http)
    if caller.tenant is None:
        raise unauthorized("This key cannot make requests; use a tenant's API key.")
    return caller.tenant


async def off_loop(state: ServerState, fn, *args):
    """Run CPU-bound prompt work (render, tokenize) in a worker thread, bounded."""
    return await to_thread.run_sync(fn, *args, limiter=state.render_limiter)


def _include_usage(body) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


@router.post("/v1/chat/completions", response_model=None, responses={200: {"model": ChatCompletion}})
async def chat_completions(
    body: ChatCompletionRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)
) -> Response:
    state = server_state(http)
    arrived = state.clock()
    check_model(state, body.model)
    check_chat(body, state.settings.limits)
    prompt = await off_loop(state, state.renderer.render, body.messages, body.tools)
    http_id = request_id_of(http.scope)
    gen = start(
        state,
        endpoint="chat",
        request_id=f"chatcmpl-{http_id.removeprefix('req_')}",
        http_id=http_id,
        tenant=tenant.name,
        body=body,
        tokens=prompt.tokens,
        roles=prompt.roles,
        limit=body.token_limit(),
        prompt_text=prompt.text,
        arrived=arrived,
    )
    created, model = int(state.wall_clock()), state.engine.model_name
    return await _respond(
        gen, http, body, _chat_chunks(gen, created, model, _include_usage(body)),
        lambda text: ChatCompletion(
            id=gen.sub.request_id, created=created, model=model, usage=gen.usage,
            choices=[ChatChoice(message=AssistantMessage(content=text), finish_reason=gen.finish_reason)],
        ),
    )


async def _respond(gen: Generation, http: HTTPRequest, body, stream_chunks, reply_for) -> Response:
    """The tail both endpoints share: stream server-sent events, or collect the whole text and
    answer with `reply_for(text)`; a client that went away gets no body."""
    if body.stream:
        return StreamingResponse(gen.sse(stream_chunks), media_type="text/event-stream", headers=SSE_HEADERS)
    try:
        text = await gen.collect(http)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(reply_for(text).model_dump())


def _chunk_maker(shape, gen: Generation, created: int, model: str, include_usage: bool):
    """Builds one streamed chunk of `shape` (a pydantic model); OpenAI's chunks carry `usage`
    only when the client asked for it with stream_options.include_usage."""

    def chunk(choices: list, usage=None) -> dict:
        body = shape(id=gen.sub.request_id, created=created, model=model, choices=choices, usage=usage).model_dump()
        if not include_usage:
            body.pop("usage")
        return body

    return chunk


def _chat_chunks(gen: Generation, created: int, model: str, include_usage: bool):
    chunk = _chunk_maker(ChatCompletionChunk, gen, created, model, include_usage)

    def render(out: RequestOutput | None) -> list[dict]:
        if out is None:  # OpenAI's first chunk names the role and has empty content
            return [chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])]
        chunks = []
        if out.new_text:
            chunks.append(chunk([ChunkChoice(delta=ChunkDelta(content=out.new_text))]))
        if out.finished:
            chunks.append(chunk([ChunkChoice(delta=ChunkDelta(), finish_reason=gen.finish_reason)]))
            if include_usage:
                chunks.append(chunk([], usage=gen.usage))
        return chunks

    return render


@router.post("/v1/completions", response_model=None, responses={200: {"model": TextCompletion}})
async def completions(
    body: CompletionRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)
) -> Response:
    state = server_state(http)
    arrived = state.clock()
    check_model(state, body.model)
    if body.echo:
        raise bad_request("echo is not supported", param="echo")
    check_sampling(body, state.settings.limits)
    tokens = await off_loop(state, prompt_from_completion, state.engine.tokenizer, body.prompt)
    http_id = request_id_of(http.scope)
    gen = start(
        state,
        endpoint="completions",
        request_id=f"cmpl-{http_id.removeprefix('req_')}",
        http_id=http_id,
        tenant=tenant.name,
        body=body,
        tokens=tokens,
        roles=None,
        limit=body.token_limit(),
        prompt_text=body.prompt if isinstance(body.prompt, str) else None,
        arrived=arrived,
    )
    created, model = int(state.wall_clock()), state.engine.model_name
    return await _respond(
        gen, http, body, _text_chunks(gen, created, model, _include_usage(body)),
        lambda text: TextCompletion(
            id=gen.sub.request_id, created=created, model=model, usage=gen.usage,
            choices=[TextChoice(text=text, finish_reason=gen.finish_reason)],
        ),
    )


def _text_chunks(gen: Generation, created: int, model: str, include_usage: bool):
    chunk = _chunk_maker(TextCompletion, gen, created, model, include_usage)

    def render(out: RequestOutput | None) -> list[dict]:
        if out is None:
            return []
        chunks = []
        if out.new_text and not out.finished:
            chunks.append(chunk([TextChoice(text=out.new_text)]))
        if out.finished:
            chunks.append(chunk([TextChoice(text=out.new_text, finish_reason=gen.finish_reason)]))
            if include_usage:
                chunks.append(chunk([], usage=gen.usage))
        return chunks

    return render

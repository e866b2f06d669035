"""POST /v1/chat/completions and POST /v1/completions, in OpenAI's request/response shapes."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Header
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from promptcache.engine.api import RequestOutput
from promptcache.server.chat import prompt_from_completion
from promptcache.server.errors import bad_request
from promptcache.server.generation import ClientGone, Generation, check_model, start
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
from promptcache.server.tenants import Tenant

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# 499 is the de-facto status for "client closed request"; nobody reads it, but logs do.
CLIENT_CLOSED = 499


def server_state(http: HTTPRequest) -> ServerState:
    return http.app.state.promptcache


def tenant_of(
    http: HTTPRequest, authorization: str | None = Header(default=None)
) -> Tenant:
    """Authentication runs as a dependency so that a missing key is a 401 before the body
    is even validated, as with OpenAI."""
    return server_state(http).keys.tenant(authorization)


def _include_usage(body) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


@router.post("/v1/chat/completions", response_model=None, responses={200: {"model": ChatCompletion}})
async def chat_completions(
    body: ChatCompletionRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)
) -> Response:
    state = server_state(http)
    arrived = state.clock()
    check_model(state, body.model)
    prompt = await run_in_threadpool(state.renderer.render, body.messages, body.tools)
    gen = start(
        state,
        endpoint="chat",
        request_id=f"chatcmpl-{uuid.uuid4().hex}",
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
    tokens = await run_in_threadpool(prompt_from_completion, state.engine.tokenizer, body.prompt)
    gen = start(
        state,
        endpoint="completions",
        request_id=f"cmpl-{uuid.uuid4().hex}",
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

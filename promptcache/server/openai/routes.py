"""POST /v1/chat/completions and POST /v1/completions, in OpenAI's request/response shapes.

Order of work in both: the caller was authenticated from the headers (guard.py) and the body's
size bounded (body_limit.py) before the body was parsed; then the cheap limits (limits.py);
only then the prompt is rendered and tokenized, in a worker thread so the event loop keeps
serving, and at most `render_threads` at a time so a burst of large prompts cannot take every
thread and core.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response

from promptcache.server.chat import prompt_from_completion
from promptcache.server.context.sessions import attach as attach_session
from promptcache.server.context.sessions import refuse as refuse_session
from promptcache.server.core.deps import check_model, off_loop, served_name, server_state, tenant_of
from promptcache.server.core.ignored import check_unknown, note_ignored
from promptcache.server.core.spec import GenerationSpec
from promptcache.server.errors import bad_request
from promptcache.server.fanout import choice_specs, collect_all, shared_usage, start_shared
from promptcache.server.generation import CLIENT_CLOSED, ClientGone, respond, start
from promptcache.server.limits import check_chat, check_sampling
from promptcache.server.openai.chat_choices import chat_choices
from promptcache.server.openai import logprobs as lp
from promptcache.server.openai.schema import (
    MAX_CHOICES,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    TextCompletion,
)
from promptcache.server.openai.stream import (chat_chunks, choices_stream, completion_usage, sse_stream, text_chunks,
                                              tool_chat_chunks)
from promptcache.server.openai.translate import cache_spec, openai_usage, sampling_spec
from promptcache.server.prompts.use import prompt_turns
from promptcache.server.request_id import request_id_of
from promptcache.server.state import ServerState
from promptcache.server.structured.compile import compile_structure, ignored_header
from promptcache.server.structured.openai_chat import plan_chat, reply_message
from promptcache.server.tenants import Tenant

router = APIRouter()


def _arrival(http: HTTPRequest, model: str) -> tuple[ServerState, float]:
    """The server state and when the request arrived (its submission time, read before any
    prompt work), once the model it names is known to be the one served."""
    state = server_state(http)
    arrived = state.clock()
    check_model(state, model)
    return state, arrived


def _include_usage(body) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


@router.post("/v1/chat/completions", response_model=None, responses={200: {"model": ChatCompletion}})
async def chat_completions(
    body: ChatCompletionRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)
) -> Response:
    check_unknown(http, body, "openai")
    state, arrived = _arrival(http, body.model)
    check_chat(body, state.settings.limits)
    lp.check_chat(body)
    structure, messages, template_tools = plan_chat(state.renderer, body)
    note_ignored(http, structure.ignored, "openai")
    lead, _ = await prompt_turns(state, tenant.name, body.prompt)  # a registered template goes first
    messages = lead + list(messages)
    compiled = await compile_structure(state.engine, structure.spec)
    prompt = await off_loop(state, state.renderer.render, messages, template_tools)
    lp.check_size(body, [len(prompt.tokens)], body.n or 1, state)  # before any generation
    http_id = request_id_of(http.scope)
    spec = GenerationSpec(
        endpoint="chat", request_id=f"chatcmpl-{http_id.removeprefix('req_')}", tenant=tenant.name,
        tokens=prompt.tokens, roles=prompt.roles, sampling=sampling_spec(body, body.token_limit()),
        cache=cache_spec(body), prompt_text=prompt.text, structure=compiled, headers=ignored_header(compiled),
    )
    created, model = int(state.wall_clock()), served_name(state)
    if (body.n or 1) > 1:  # the choices share one prefill (fanout.py)
        await refuse_session(http, "n > 1")
        return await chat_choices(state, body, spec, structure, http, http_id, arrived, created, model)
    spec = await attach_session(state, http, spec)
    gen = start(state, spec, http_id=http_id, arrived=arrived)
    chunks = tool_chat_chunks(gen, created, model, _include_usage(body), structure) if structure.calls_allowed \
        else chat_chunks(gen, created, model, _include_usage(body))

    def reply(text: str) -> ChatCompletion:
        content, calls, reason = reply_message(text, structure, gen.finish_reason)
        message = AssistantMessage(content=content, tool_calls=calls or None)
        return ChatCompletion(id=gen.sub.request_id, created=created, model=model, usage=openai_usage(gen.usage),
                              choices=[ChatChoice(message=message, finish_reason=reason, logprobs=lp.chat_choice(gen))],
                              prompt_logprobs=lp.chat_prompt_logprobs(gen))

    return await respond(gen, http, sse_stream(gen, chunks) if body.stream else None, reply)


@router.post("/v1/completions", response_model=None, responses={200: {"model": TextCompletion}})
async def completions(
    body: CompletionRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)
) -> Response:
    check_unknown(http, body, "openai")
    state, arrived = _arrival(http, body.model)
    lp.check_completion(body)
    check_sampling(body, state.settings.limits)
    prompts, n = body.prompts(), body.n or 1
    if len(prompts) * n > MAX_CHOICES:
        raise bad_request(f"{len(prompts)} prompts times n={n} is more than {MAX_CHOICES} choices.", param="n")
    http_id = request_id_of(http.scope)
    specs = []
    for prompt in prompts:
        tokens = await off_loop(state, prompt_from_completion, state.engine.tokenizer, prompt, state.renderer.max_chars)
        specs.append(GenerationSpec(
            endpoint="completions", request_id=f"cmpl-{http_id.removeprefix('req_')}", tenant=tenant.name,
            tokens=tokens, sampling=sampling_spec(body, body.token_limit()), cache=cache_spec(body),
            prompt_text=prompt if isinstance(prompt, str) else None,
        ))
    created, model = int(state.wall_clock()), served_name(state)
    lp.check_size(body, [len(spec.tokens) for spec in specs], n, state)  # before any generation
    if len(specs) * n > 1:
        await refuse_session(http, "several prompts or n > 1")
        return await _choices(state, body, specs, n, http, http_id, arrived, created, model)
    gen = start(state, await attach_session(state, http, specs[0]), http_id=http_id, arrived=arrived)
    scoring = lp.CompletionScoring(state.engine.tokenizer, gen, body)
    stream = sse_stream(gen, text_chunks(gen, created, model, _include_usage(body), scoring=scoring))
    return await respond(
        gen, http, stream if body.stream else None,
        lambda text: TextCompletion(
            id=gen.sub.request_id, created=created, model=model, usage=completion_usage(gen, scoring),
            choices=[lp.text_choice(scoring, text, 0)],
        ),
    )


async def _choices(state, body: CompletionRequest, specs: list[GenerationSpec], n: int, http: HTTPRequest,
                   http_id: str, arrived: float, created: int, model: str) -> Response:
    """Batched prompts and n > 1: choice i * n + j is choice j of prompt i (OpenAI's order)."""
    groups = [choice_specs(spec, n, i * n) for i, spec in enumerate(specs)]
    try:
        gens = await start_shared(state, groups, http_id=http_id, arrived=arrived, http=http)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    leaders, completion_id = gens[::n], specs[0].request_id
    include_usage = _include_usage(body)
    scorings = [lp.CompletionScoring(state.engine.tokenizer, g, body) for g in gens]
    if body.stream:
        def usage_chunk() -> dict | None:
            if not include_usage:
                return None
            usage = lp.shared_usage(openai_usage(shared_usage(leaders, gens)), scorings[0])
            return TextCompletion(id=completion_id, created=created, model=model, choices=[],
                                  usage=usage).model_dump()

        renders = [text_chunks(g, created, model, include_usage, k, final_usage=False, chunk_id=completion_id,
                               scoring=scoring) for k, (g, scoring) in enumerate(zip(gens, scorings))]
        return choices_stream(gens, renders, usage_chunk)
    try:
        texts = await collect_all(gens, http)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    choices = [lp.text_choice(scoring, text, k) for k, (scoring, text) in enumerate(zip(scorings, texts))]
    usage = lp.shared_usage(openai_usage(shared_usage(leaders, gens)), scorings[0])
    return JSONResponse(TextCompletion(id=completion_id, created=created, model=model, choices=choices,
                                       usage=usage).model_dump())

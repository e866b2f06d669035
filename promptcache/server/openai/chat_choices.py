"""Chat completions with `n` > 1: n choices of one conversation, sharing its prefill.

The first choice is submitted alone and the others once it has its first token (fanout.py), so
they read the prompt's blocks from the cache instead of computing them n times. Usage counts
the prompt once, as OpenAI does. Streamed, each choice's chunks carry its `index` and the
request's one id, and the usage chunk (when asked for) comes once, after every choice ended.
Each choice carries its own generated tokens' `logprobs` (streamed, in its own chunks); the
prompt is one, so vLLM's `prompt_logprobs` come once, on the response, from the first choice.
"""

from __future__ import annotations

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response

from promptcache.server.core.spec import GenerationSpec
from promptcache.server.fanout import choice_specs, collect_all, shared_usage, start_shared
from promptcache.server.generation import CLIENT_CLOSED, ClientGone
from promptcache.server.openai import logprobs as lp
from promptcache.server.openai.schema import AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk
from promptcache.server.openai.stream import chat_chunks, choices_stream, tool_chat_chunks
from promptcache.server.openai.translate import openai_usage
from promptcache.server.structured.openai_chat import ChatStructure, reply_message


def _indexed(render, index: int, chunk_id: str):
    """A one-choice chunk renderer as choice `index` of a many-choice stream: its chunks renamed
    to the request's id and index, its own usage chunk dropped (one comes after all)."""

    def wrapped(out):
        chunks = []
        for chunk in render(out):
            if not chunk["choices"]:
                continue
            chunk["id"] = chunk_id
            for choice in chunk["choices"]:
                choice["index"] = index
            chunks.append(chunk)
        return chunks

    return wrapped


async def chat_choices(state, body, spec: GenerationSpec, structure: ChatStructure, http: HTTPRequest,
                       http_id: str, arrived: float, created: int, model: str) -> Response:
    n, chat_id = body.n, spec.request_id
    try:
        gens = await start_shared(state, [choice_specs(spec, n, 0)], http_id=http_id, arrived=arrived, http=http)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.stream:
        def renderer(gen, k):
            one = tool_chat_chunks(gen, created, model, include_usage, structure) if structure.calls_allowed \
                else chat_chunks(gen, created, model, include_usage)
            return _indexed(one, k, chat_id)

        def usage_chunk() -> dict | None:
            usage = openai_usage(shared_usage(gens[:1], gens))
            return ChatCompletionChunk(id=chat_id, created=created, model=model, choices=[],
                                       usage=usage).model_dump() if include_usage else None

        return choices_stream(gens, [renderer(g, k) for k, g in enumerate(gens)], usage_chunk)
    try:
        texts = await collect_all(gens, http)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    choices = []
    for k, (gen, text) in enumerate(zip(gens, texts)):
        content, calls, reason = reply_message(text, structure, gen.finish_reason)
        choices.append(ChatChoice(index=k, message=AssistantMessage(content=content, tool_calls=calls or None),
                                  finish_reason=reason, logprobs=lp.chat_choice(gen)))
    return JSONResponse(ChatCompletion(id=chat_id, created=created, model=model, choices=choices,
                                       usage=openai_usage(shared_usage(gens[:1], gens)),
                                       prompt_logprobs=lp.chat_prompt_logprobs(gens[0])).model_dump(),
                        headers=gens[0].cache_headers())

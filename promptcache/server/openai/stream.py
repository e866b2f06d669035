"""OpenAI's streamed chunks: `chat.completion.chunk` and `text_completion` objects as bare
`data:` events, ending in `data: [DONE]`; an error after the status line is an event too."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.responses import StreamingResponse

from promptcache.engine.api import RequestOutput
from promptcache.server.core.sse import SSE_HEADERS, sse_event
from promptcache.server.errors import default_shape
from promptcache.server.fanout import merged
from promptcache.server.generation import Generation
from promptcache.server.openai.schema import ChatCompletionChunk, ChunkChoice, ChunkDelta, TextChoice, TextCompletion
from promptcache.server.openai.logprobs import TokenText, chat_choice, chat_content
from promptcache.server.openai.translate import openai_usage
from promptcache.server.structured.openai_chat import reply_message

DONE = sse_event("[DONE]")


def sse_stream(gen: Generation, render, trailer: str = DONE):
    """`render(output)` gives chunk dicts; they go out as `data:` events."""
    return gen.events(lambda out: [sse_event(chunk) for chunk in render(out)],
                      lambda err: sse_event(default_shape(err)), trailer)


def choices_stream(gens: list[Generation], renders: list, usage_chunk: Callable[[], dict | None]) -> StreamingResponse:
    """Several choices as one stream: each generation's chunks (`renders[k]` renders `gens[k]`)
    as they come, then the request's one usage chunk, `usage_chunk()` once every choice ended
    (None: the client did not ask for it), then [DONE]."""

    async def events():
        async for event in merged([sse_stream(g, render, trailer="") for g, render in zip(gens, renders)]):
            yield event
        if (usage := usage_chunk()) is not None:
            yield sse_event(usage)
        yield DONE

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def chunk_maker(shape, gen: Generation, created: int, model: str, include_usage: bool, chunk_id: str | None = None):
    """Builds one streamed chunk of `shape` (a pydantic model); OpenAI's chunks carry `usage`
    only when the client asked for it with stream_options.include_usage. Every choice of a
    request streams under the request's one id (`chunk_id`). A chat delta leaves out the keys
    it does not set, as OpenAI's do (a client may test `"content" in delta`)."""

    def chunk(choices: list, usage=None) -> dict:
        body = shape(id=chunk_id or gen.sub.request_id, created=created, model=model, choices=choices,
                     usage=usage).model_dump()
        if not include_usage:
            body.pop("usage")
        for choice in body["choices"]:
            if "delta" in choice:
                choice["delta"] = {key: value for key, value in choice["delta"].items() if value is not None}
        return body

    return chunk


def chat_chunks(gen: Generation, created: int, model: str, include_usage: bool):
    chunk = chunk_maker(ChatCompletionChunk, gen, created, model, include_usage)
    text_of = TokenText(gen.state.engine.tokenizer)

    def render(out: RequestOutput | None) -> list[dict]:
        if out is None:  # OpenAI's first chunk names the role and has empty content
            return [chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])]
        chunks = []
        logprobs = None
        if gen.spec.sampling.logprobs is not None and out.new_logprobs:
            logprobs = {"content": chat_content(text_of, out.new_logprobs, gen.spec.sampling.logprobs), "refusal": None}
        if out.new_text or logprobs:
            chunks.append(chunk([ChunkChoice(delta=ChunkDelta(content=out.new_text), logprobs=logprobs)]))
        if out.finished:
            chunks.append(chunk([ChunkChoice(delta=ChunkDelta(), finish_reason=gen.finish_reason)]))
            if include_usage:
                chunks.append(chunk([], usage=openai_usage(gen.usage)))
        return chunks

    return render


def tool_chat_chunks(gen: Generation, created: int, model: str, include_usage: bool, structure):
    """Chat chunks for a reply in the generic tool format (server/structured/tools.py): the
    JSON is held back while it streams, and when it ends it goes out as OpenAI does, either the
    answer as content or each call as a `tool_calls` delta (id and name, then the arguments)."""
    chunk = chunk_maker(ChatCompletionChunk, gen, created, model, include_usage)
    held: list[str] = []

    def render(out: RequestOutput | None) -> list[dict]:
        if out is None:
            return [chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])]
        held.append(out.new_text)
        if not out.finished:
            return []
        content, calls, reason = reply_message("".join(held), structure, gen.finish_reason)
        chunks = [chunk([ChunkChoice(delta=ChunkDelta(content=content))])] if content else []
        for index, call in enumerate(calls):
            head = {"index": index, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}
            chunks.append(chunk([ChunkChoice(delta=ChunkDelta(tool_calls=[head]))]))
            args = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
            chunks.append(chunk([ChunkChoice(delta=ChunkDelta(tool_calls=[args]))]))
        # the logprobs of the JSON the model generated, whole, as the reply was held back
        chunks.append(chunk([ChunkChoice(delta=ChunkDelta(), finish_reason=reason, logprobs=chat_choice(gen))]))
        if include_usage:
            chunks.append(chunk([], usage=openai_usage(gen.usage)))
        return chunks

    return render


def text_chunks(gen: Generation, created: int, model: str, include_usage: bool, index: int = 0,
                final_usage: bool = True, chunk_id: str | None = None, scoring=None):
    """Chunks of choice `index`; with several choices their one usage chunk is sent after all
    of them (final_usage=False here). `scoring` (openai/logprobs.py): the echoed prompt first,
    and each chunk's logprobs."""
    chunk = chunk_maker(TextCompletion, gen, created, model, include_usage, chunk_id)
    first = [True]

    def render(out: RequestOutput | None) -> list[dict]:
        if out is None:
            return []
        chunks = []
        text, logprobs = out.new_text, None
        if scoring is not None:
            if first[0] and scoring.echo:  # the prompt (and its logprobs) before any generated text
                head, head_logprobs = scoring.head()
                chunks.append(chunk([TextChoice(index=index, text=head, logprobs=head_logprobs)]))
            text, logprobs = scoring.delta(out.new_text, out.new_token_ids, out.new_logprobs or [])
        first[0] = False
        if (text or logprobs) and not out.finished:
            chunks.append(chunk([TextChoice(index=index, text=text, logprobs=logprobs)]))
        if out.finished:
            reason = "length" if scoring is not None and scoring.prompt_only else gen.finish_reason
            chunks.append(chunk([TextChoice(index=index, text=text, logprobs=logprobs, finish_reason=reason)]))
            if include_usage and final_usage:
                chunks.append(chunk([], usage=completion_usage(gen, scoring)))
        return chunks

    return render


def completion_usage(gen: Generation, scoring=None):
    """OpenAI's usage; a prompt scored alone (max_tokens 0) generated nothing it shows."""
    usage = openai_usage(gen.usage)
    if scoring is not None and scoring.prompt_only:
        usage.completion_tokens, usage.total_tokens = 0, usage.prompt_tokens
    return usage

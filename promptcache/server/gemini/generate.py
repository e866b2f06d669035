"""POST /v1beta/models/{model}:generateContent and :streamGenerateContent, in Gemini's shapes.

Same order of work as every dialect: the key was checked from the headers (`x-goog-api-key`,
or `Authorization: Bearer`), the body's size bounded, then the cheap limits, and only then the
render and tokenization, in a bounded worker thread. With `cachedContent` the prompt is the
cached content's system instruction, tools and contents followed by the request's contents;
its pinned prefix is read from the cache, and `usageMetadata.cachedContentTokenCount` reports
the prompt tokens the cache supplied. A request naming a cached content may not set its own
systemInstruction or tools (Gemini's rule). Streaming answers server-sent events of
GenerateContentResponse chunks (`alt=sse`), the last with finishReason and usageMetadata.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import Response

from promptcache.engine.api import RequestOutput
from promptcache.server.core.deps import check_model, off_loop, served_name, server_state, tenant_of
from promptcache.server.core.spec import CacheSpec, GenerationSpec
from promptcache.server.core.sse import sse_event
from promptcache.server.errors import bad_request, register_error_shape
from promptcache.server.gemini import cached
from promptcache.server.gemini import translate as tr
from promptcache.server.gemini.errors import gemini_error
from promptcache.server.gemini.schema import GenerateContentRequest
from promptcache.server.generation import Generation, respond, start
from promptcache.server.limits import Limits, check_label, check_tools
from promptcache.server.request_id import request_id_of
from promptcache.server.tenants import Tenant

PREFIX = "/v1beta"
register_error_shape(PREFIX, gemini_error)
router = APIRouter(prefix=PREFIX)


def check_limits(body: GenerateContentRequest, limits: Limits) -> None:
    if len(body.contents) > limits.max_messages:
        raise bad_request(f"{len(body.contents)} contents is more than the limit of {limits.max_messages}.",
                          param="contents")
    for i, content in enumerate(body.contents):
        if len(content.parts) > limits.max_content_parts:
            raise bad_request(f"{len(content.parts)} parts is more than the limit of {limits.max_content_parts}.",
                              param=f"contents[{i}].parts")
    check_tools(tr.template_tools(body.tools), limits)
    for i, stop in enumerate((body.generationConfig.stopSequences or []) if body.generationConfig else []):
        check_label(stop, limits.max_stop_chars, f"generationConfig.stopSequences[{i}]")


async def _generate(model: str, body: GenerateContentRequest, http: HTTPRequest, tenant: Tenant,
                    stream: bool) -> Response:
    state = server_state(http)
    arrived = state.clock()
    check_model(state, tr.model_name(model))
    check_limits(body, state.settings.limits)
    turns, tools = tr.turns(body.systemInstruction, []), tr.template_tools(body.tools)
    if body.cachedContent is not None:
        if body.systemInstruction is not None or body.tools:
            raise bad_request("a request with cachedContent may not set systemInstruction or tools: they are "
                              "part of the cached content", param="cachedContent")
        record = await cached.find(state, tenant.name, body.cachedContent)
        if record.data["model"] != tr.model_name(model):
            raise bad_request(f"cachedContent was created for models/{record.data['model']}", param="cachedContent")
        turns, tools = cached.prefix_turns(record.data)
    elif tools:
        state.renderer.require_tool_format("tools")
    prompt = await off_loop(state, state.renderer.render, turns + tr.turns(None, body.contents), tools)
    http_id = request_id_of(http.scope)
    spec = GenerationSpec(
        endpoint="generateContent", request_id=f"gen-{http_id.removeprefix('req_')}", tenant=tenant.name,
        tokens=prompt.tokens, roles=prompt.roles, sampling=tr.sampling_spec(body.generationConfig),
        cache=CacheSpec(), prompt_text=prompt.text,
    )
    gen = start(state, spec, http_id=http_id, arrived=arrived)
    model_version = served_name(state)

    def reply(text: str) -> dict:
        return {"candidates": [tr.candidate(text, gen.finish_reason)], "usageMetadata": tr.usage_metadata(gen.usage),
                "modelVersion": model_version, "responseId": gen.sub.request_id}

    return await respond(gen, http, _events(gen, model_version) if stream else None, reply)


def _events(gen: Generation, model_version: str):
    def render(out: RequestOutput | None) -> list[str]:
        if out is None or not (out.new_text or out.finished):
            return []
        chunk = {"candidates": [tr.candidate(out.new_text, out.finish_reason if out.finished else None)],
                 "modelVersion": model_version, "responseId": gen.sub.request_id}
        if out.finished:
            chunk["usageMetadata"] = tr.usage_metadata(gen.usage)
        return [sse_event(chunk)]

    return gen.events(render, lambda err: sse_event(gemini_error(err)))


@router.post("/models/{model}:generateContent", response_model=None)
async def generate_content(model: str, body: GenerateContentRequest, http: HTTPRequest,
                           tenant: Tenant = Depends(tenant_of)) -> Response:
    return await _generate(model, body, http, tenant, stream=False)


@router.post("/models/{model}:streamGenerateContent", response_model=None)
async def stream_generate_content(model: str, body: GenerateContentRequest, http: HTTPRequest,
                                  tenant: Tenant = Depends(tenant_of)) -> Response:
    return await _generate(model, body, http, tenant, stream=True)

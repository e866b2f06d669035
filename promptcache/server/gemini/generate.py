"""POST /v1beta/models/{model}:generateContent and :streamGenerateContent, in Gemini's shapes.

The key was checked from the headers (`x-goog-api-key`, or `Authorization: Bearer`) and the
body's size bounded before the prompt is rendered (gemini/prompt.py); a reply's constraint (a
function call, a response schema) is compiled off the event loop. `usageMetadata`
reports the prompt tokens the cache supplied as `cachedContentTokenCount`. A reply that calls
functions answers `functionCall` parts (finishReason STOP, as Gemini's does). Streaming answers
server-sent events of GenerateContentResponse chunks (`alt=sse`), the last with finishReason
and usageMetadata; a reply that may call functions is held back until it ends and then sent as
one chunk of parts, as its tool-format JSON must never reach the client.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import Response

from promptcache.engine.api import EngineInputError, RequestOutput
from promptcache.server.core.deps import served_name, server_state, tenant_of
from promptcache.server.core.spec import CacheSpec, GenerationSpec
from promptcache.server.core.sse import sse_event
from promptcache.server.errors import bad_request, register_error_shape
from promptcache.server.gemini import prompt as gemini_prompt
from promptcache.server.gemini import translate as tr
from promptcache.server.gemini.errors import gemini_error
from promptcache.server.gemini.schema import GenerateContentRequest
from promptcache.server.gemini.tools import reply_parts
from promptcache.server.generation import Generation, respond, start
from promptcache.server.request_id import request_id_of
from promptcache.server.structured.compile import compile_structure, ignored_header
from promptcache.server.structured.openai_chat import ChatStructure
from promptcache.server.tenants import Tenant

PREFIX = "/v1beta"
register_error_shape(PREFIX, gemini_error)
router = APIRouter(prefix=PREFIX)


async def _generate(model: str, body: GenerateContentRequest, http: HTTPRequest, tenant: Tenant,
                    stream: bool) -> Response:
    state = server_state(http)
    arrived = state.clock()
    prompt, structure = await gemini_prompt.render(state, tenant.name, model, body)
    try:
        compiled = await compile_structure(state.engine, structure.spec)
    except EngineInputError as err:  # Gemini's error shape has no param: the message names the field
        name = err.param or "generationConfig.responseSchema"
        raise bad_request(f"{name}: {err}", param=name) from None
    http_id = request_id_of(http.scope)
    spec = GenerationSpec(
        endpoint="generateContent", request_id=f"gen-{http_id.removeprefix('req_')}", tenant=tenant.name,
        tokens=prompt.tokens, roles=prompt.roles, sampling=tr.sampling_spec(body.generationConfig),
        cache=CacheSpec(), prompt_text=prompt.text, structure=compiled, headers=ignored_header(compiled),
    )
    gen = start(state, spec, http_id=http_id, arrived=arrived)
    model_version = served_name(state)

    def reply(text: str) -> dict:
        return {"candidates": [tr.candidate(reply_parts(text, structure, gen.finish_reason), gen.finish_reason)],
                "usageMetadata": tr.usage_metadata(gen.usage), "modelVersion": model_version,
                "responseId": gen.sub.request_id}

    return await respond(gen, http, _events(gen, model_version, structure) if stream else None, reply)


def _events(gen: Generation, model_version: str, structure: ChatStructure):
    held: list[str] = []

    def render(out: RequestOutput | None) -> list[str]:
        if out is None or not (out.new_text or out.finished):
            return []
        parts = [{"text": out.new_text}]
        if structure.calls_allowed:  # the tool format's JSON is read whole, then sent as parts
            held.append(out.new_text)
            if not out.finished:
                return []
            parts = reply_parts("".join(held), structure, out.finish_reason)
        chunk = {"candidates": [tr.candidate(parts, out.finish_reason if out.finished else None)],
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

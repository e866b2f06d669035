"""POST /v1beta/models/{model}:countTokens: the prompt tokens a generateContent would read.

The body is `contents` alone (what google-genai sends) or a whole `generateContentRequest`
(with its systemInstruction, tools, toolConfig, generationConfig or cachedContent), never
both. It is rendered exactly as :generateContent renders it (gemini/prompt.py), so
`totalTokens` equals that request's `usageMetadata.promptTokenCount`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from promptcache.server.core.deps import check_model, server_state, tenant_of
from promptcache.server.errors import bad_request
from promptcache.server.gemini import prompt as gemini_prompt
from promptcache.server.gemini import translate as tr
from promptcache.server.gemini.generate import PREFIX
from promptcache.server.gemini.schema import CountTokensRequest, GenerateContentRequest
from promptcache.server.tenants import Tenant

router = APIRouter(prefix=PREFIX)


@router.post("/models/{model}:countTokens")
async def count_tokens(model: str, body: CountTokensRequest, http: HTTPRequest,
                       tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    if (body.contents is None) == (body.generateContentRequest is None):
        raise bad_request("give contents or generateContentRequest (one of them)", param="contents")
    request = body.generateContentRequest or GenerateContentRequest(contents=body.contents)
    if body.generateContentRequest is not None and body.generateContentRequest.model is not None:
        check_model(state, tr.model_name(body.generateContentRequest.model))
    prompt, _ = await gemini_prompt.render(state, tenant.name, model, request)
    return {"totalTokens": len(prompt.tokens)}

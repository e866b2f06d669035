"""GET /v1beta/models and GET /v1beta/models/{model}: every served name (core/deps.py
`served_names`, --served-model-name) as a Gemini Model resource; any other name is NOT_FOUND.
The same answers come from GET /v1/models and /v1/models/{model} for google-genai on Gemini's
v1 paths (server/models.py tells its requests by their x-goog headers).

The list pages as Gemini's does: `pageSize` names at most (50 by default, up to 1000) and a
`nextPageToken` while more are left, which `pageToken` continues from.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi import Request as HTTPRequest

from promptcache.server.core.deps import caller_of, served_names, server_state
from promptcache.server.errors import APIError, bad_request
from promptcache.server.gemini import translate as tr
from promptcache.server.gemini.generate import PREFIX
from promptcache.server.tenants import Caller

router = APIRouter(prefix=PREFIX)
METHODS = ["generateContent", "streamGenerateContent", "countTokens", "createCachedContent"]
PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000


def model_resource(http: HTTPRequest, name: str) -> dict:
    state = server_state(http)
    context = state.engine.context_length
    return {"name": f"models/{name}", "baseModelId": name, "version": state.engine.model_name,
            "displayName": name, "inputTokenLimit": context, "outputTokenLimit": context,
            "supportedGenerationMethods": METHODS}


def models_page(http: HTTPRequest, page_size: int, page_token: str | None) -> dict:
    names = served_names(server_state(http))
    start = 0
    if page_token:
        if not page_token.isdigit() or int(page_token) > len(names):
            raise bad_request("pageToken is not one this server gave", param="pageToken")
        start = int(page_token)
    out: dict = {"models": [model_resource(http, n) for n in names[start:start + page_size]]}
    if start + page_size < len(names):
        out["nextPageToken"] = str(start + page_size)
    return out


def model_of(http: HTTPRequest, model: str) -> dict:
    name = tr.model_name(model)
    if name not in served_names(server_state(http)):
        raise APIError(404, f"models/{name} is not found.", code="model_not_found")
    return model_resource(http, name)


@router.get("/models")
async def list_models(http: HTTPRequest, caller: Caller = Depends(caller_of),
                      pageSize: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE), pageToken: str | None = None) -> dict:
    return models_page(http, pageSize, pageToken)


@router.get("/models/{model}")
async def get_model(model: str, http: HTTPRequest, caller: Caller = Depends(caller_of)) -> dict:
    return model_of(http, model)

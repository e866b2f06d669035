"""GET /v1beta/models and GET /v1beta/models/{model}: every served name (core/deps.py
`served_names`, --served-model-name) as a Gemini Model resource; any other name is NOT_FOUND.

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


def model_resource(http: HTTPRequest, name: str) -> dict:
    state = server_state(http)
    context = state.engine.context_length
    return {"name": f"models/{name}", "baseModelId": name, "version": state.engine.model_name,
            "displayName": name, "inputTokenLimit": context, "outputTokenLimit": context,
            "supportedGenerationMethods": METHODS}


@router.get("/models")
async def list_models(http: HTTPRequest, caller: Caller = Depends(caller_of),
                      pageSize: int = Query(50, ge=1, le=1000), pageToken: str | None = None) -> dict:
    names = served_names(server_state(http))
    start = 0
    if pageToken:
        if not pageToken.isdigit() or int(pageToken) > len(names):
            raise bad_request("pageToken is not one this server gave", param="pageToken")
        start = int(pageToken)
    out: dict = {"models": [model_resource(http, n) for n in names[start:start + pageSize]]}
    if start + pageSize < len(names):
        out["nextPageToken"] = str(start + pageSize)
    return out


@router.get("/models/{model}")
async def get_model(model: str, http: HTTPRequest, caller: Caller = Depends(caller_of)) -> dict:
    name = tr.model_name(model)
    if name not in served_names(server_state(http)):
        raise APIError(404, f"models/{name} is not found.", code="model_not_found")
    return model_resource(http, name)

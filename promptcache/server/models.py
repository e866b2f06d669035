"""GET /v1/models and GET /v1/models/{model}: the names the served model answers to.

The server serves one model under one or more names (`--served-model-name`, repeatable: aliases
as llama.cpp and vLLM accept them; without it, the model's own name). Every name is listed, any
of them is accepted wherever a request names its model, and any other is a 404 in the dialect's
shape. The same two paths answer in OpenAI's shapes (`client.models.list()` / `.retrieve()`),
or in Anthropic's when the request carries `anthropic-version`, as Anthropic's client always
sends it, or in Gemini's when it carries google-genai's x-goog headers (its default v1 paths;
`GET /v1beta/models` is in gemini/models.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse

from promptcache.server.anthropic.errors import anthropic_error
from promptcache.server.core.deps import caller_of, served_names, server_state
from promptcache.server.errors import APIError, model_not_found
from promptcache.server.gemini import models as gemini_models
from promptcache.server.gemini.errors import gemini_error
from promptcache.server.openai.schema import ModelCard, ModelList
from promptcache.server.tenants import Caller

router = APIRouter(prefix="/v1/models")
STARTED_AT = "promptcache_started_at"  # app.state attribute: the server's start, in epoch seconds


def _anthropic(http: HTTPRequest) -> bool:
    return "anthropic-version" in http.headers


def _gemini(http: HTTPRequest) -> bool:
    """google-genai on Gemini's v1 paths: it names itself in x-goog-api-client, its key in x-goog-api-key."""
    return "x-goog-api-client" in http.headers or "x-goog-api-key" in http.headers


def _started_at(http: HTTPRequest) -> int:
    return getattr(http.app.state, STARTED_AT, 0)


def _openai_card(http: HTTPRequest, name: str) -> ModelCard:
    engine = server_state(http).engine
    return ModelCard(id=name, created=_started_at(http), context_length=engine.context_length)


def _anthropic_card(http: HTTPRequest, name: str) -> dict:
    created = datetime.fromtimestamp(_started_at(http), UTC).isoformat().replace("+00:00", "Z")
    return {"type": "model", "id": name, "display_name": name, "created_at": created}


@router.get("", response_model=None, responses={200: {"model": ModelList}})
async def list_models(http: HTTPRequest, caller: Caller = Depends(caller_of),
                      limit: int = Query(20, ge=1, le=1000), after_id: str | None = None,
                      before_id: str | None = None, pageSize: int = Query(gemini_models.PAGE_SIZE, ge=1,
                                                                           le=gemini_models.MAX_PAGE_SIZE),
                      pageToken: str | None = None) -> dict:
    """Every served name. Anthropic's list pages (`limit`, `after_id`, `before_id`) over them,
    and Gemini's (`pageSize`, `pageToken`)."""
    if _gemini(http):
        return gemini_models.models_page(http, pageSize, pageToken)
    names = list(served_names(server_state(http)))
    if not _anthropic(http):
        return ModelList(data=[_openai_card(http, n) for n in names]).model_dump()
    if after_id in names:
        names = names[names.index(after_id) + 1:]
    if before_id in names:
        names = names[:names.index(before_id)]
    page = names[-limit:] if before_id is not None else names[:limit]
    return {"data": [_anthropic_card(http, n) for n in page], "has_more": len(page) < len(names),
            "first_id": page[0] if page else None, "last_id": page[-1] if page else None}


@router.get("/{model:path}", response_model=None, responses={200: {"model": ModelCard}})
async def retrieve_model(model: str, http: HTTPRequest, caller: Caller = Depends(caller_of)):
    if _gemini(http):  # the path is OpenAI's, so the error handlers would answer in its shape
        try:
            return gemini_models.model_of(http, model)
        except APIError as err:
            return JSONResponse(gemini_error(err), status_code=err.status)
    if model not in served_names(server_state(http)):
        if _anthropic(http):  # the path is OpenAI's, so the error handlers would answer in its shape
            return JSONResponse(anthropic_error(model_not_found(model)), status_code=404)
        raise model_not_found(model)
    return _anthropic_card(http, model) if _anthropic(http) else _openai_card(http, model).model_dump()

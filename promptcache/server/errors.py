"""Every error the server sends, in the shape of the dialect whose path was called.

Clients parse the error body to build their exceptions (`openai.BadRequestError` reads
`error.message`, `error.param` and `error.code`; `anthropic.BadRequestError` reads
`error.type` and `error.message`), so a bare FastAPI `{"detail": ...}` or a 422 would surface
as an opaque failure. Each dialect registers its shape for its path prefixes
(`register_error_shape`); the longest matching prefix wins, and "" is the default. The handlers installed here turn every way a request
can go wrong (malformed JSON, a wrong type, an out-of-range number, an unknown route, a full
queue, an engine refusal) into that shape, and bad input is always a 4xx, never a 500.

Every error is logged as one line with the request id (see `request_id.py`). A 5xx body names
that id and nothing about the failure itself: no exception class, no path, no stack.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptcache.engine.api import EngineInputError
from promptcache.server.logs import log_event
from promptcache.server.request_id import request_id_of

try:  # the cache's pin budgets; absent from older cache layers
    from promptcache.cache.errors import PinBudgetExceeded
except ImportError:  # pragma: no cover

    class PinBudgetExceeded(Exception):  # type: ignore[no-redef]
        """Stand-in that nothing raises."""

log = logging.getLogger("promptcache.server")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_exceeded",
}


class APIError(Exception):
    """An error a route raises on purpose; rendered by `install_error_handlers`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPE_BY_STATUS.get(status, "server_error")
        self.headers = headers


ErrorShape = Callable[[APIError], dict]


def default_shape(err: APIError) -> dict:
    """{"error": {message, type, param, code}}: OpenAI's shape, and the admin endpoints'."""
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


_SHAPES: dict[str, ErrorShape] = {"": default_shape}


def register_error_shape(prefix: str, shape: ErrorShape) -> None:
    """Errors on paths starting with `prefix` are rendered by `shape` (idempotent). A `*` in
    `prefix` stands for one path segment's characters up to what follows it, so that
    "/v1/models/*:generateContent" claims Gemini's method paths and not the models beside them."""
    _SHAPES[prefix] = shape


def _matches(prefix: str, path: str) -> bool:
    head, star, tail = prefix.partition("*")
    if not star:
        return path.startswith(prefix)
    rest = path[len(head):] if path.startswith(head) else None
    return rest is not None and tail in rest and "/" not in rest[:rest.find(tail)]


def shape_for(path: str | None) -> ErrorShape:
    prefix = max((p for p in _SHAPES if _matches(p, path or "")), key=len)
    return _SHAPES[prefix]


def error_response(err: APIError, headers: dict[str, str] | None = None, path: str | None = None) -> JSONResponse:
    return JSONResponse(shape_for(path)(err), status_code=err.status, headers=headers or err.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unauthorized(message: str = "Incorrect or missing API key.") -> APIError:
    return APIError(401, message, code="invalid_api_key")


def server_error(request_id: str, code: str | None = None, status: int = 500) -> APIError:
    """A failure on our side: the body says which request, the log line (same id) says why."""
    what = "The engine failed while running" if code == "engine_failure" else "The server had an error processing"
    return APIError(status, f"{what} your request. Quote request id {request_id} when reporting it.",
                    type="server_error", code=code)


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist.",
        param="model",
        code="model_not_found",
    )


def queue_full(max_queue: int) -> APIError:
    return APIError(
        429,
        f"The server has {max_queue} requests waiting; try again shortly.",
        code="rate_limit_exceeded",
    )


def tenant_limit(limit: int, retry_after_s: int) -> APIError:
    """429: the caller's tenant has `limit` requests queued or running (other tenants do not
    share this limit)."""
    return APIError(
        429,
        f"Your tenant has {limit} requests queued or running, its limit; retry after {retry_after_s} s.",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after_s)},
    )


def param_path(loc: tuple[Any, ...]) -> str | None:
    """Pydantic's location tuple as OpenAI spells a parameter: ('body', 'messages', 0, 'content')
    -> 'messages[0].content'. Union-branch names pydantic inserts (e.g. 'str', 'list[...]',
    'function-after[...]') are dropped, since they name no field the client sent."""
    parts: list[str] = []
    for item in loc:
        if item == "body" and not parts:
            continue
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            continue
        text = str(item)
        if "[" in text or text in {"str", "int", "list", "float", "bool", "dict"}:
            continue
        parts.append(text)
    return ".".join(parts) or None


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    # Within a union (string content or a list of parts) pydantic reports every branch; the
    # deepest location is the one that names what the client actually got wrong.
    first = max(errors, key=lambda e: len(param_path(tuple(e.get("loc", ()))) or ""), default={})
    path = request.url.path
    if first.get("type") == "json_invalid":
        return error_response(bad_request("We could not parse the JSON body of your request."), path=path)
    loc = tuple(first.get("loc", ()))
    param = param_path(loc)
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    else:
        message = f"Invalid value for '{param}': {first.get('msg', 'invalid value')}."
    if param is None:
        message = f"Invalid request body: {first.get('msg', 'not a valid JSON object')}."
    return error_response(bad_request(message, param=param), path=path)


def _logged(request: Request, err: APIError) -> APIError:
    log_event(log, "error", req=request_id_of(request.scope), status=err.status, code=err.code,
              param=err.param, path=request.url.path)
    return err


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return error_response(_logged(request, exc), path=request.url.path)


# The engine names its own fields; each dialect's endpoint calls some of them otherwise.
_PARAM_NAMES = {"/v1/chat/completions": {"prompt": "messages"}, "/v1/messages": {"prompt": "messages"},
                "/v1/responses": {"prompt": "input", "max_tokens": "max_output_tokens"}}


async def _engine_input_error(request: Request, exc: EngineInputError) -> JSONResponse:
    param = _PARAM_NAMES.get(request.url.path, {}).get(exc.param, exc.param)
    return error_response(_logged(request, bad_request(str(exc), param=param)), path=request.url.path)


PIN_FIGURES = ("tenant", "requested_bytes", "tenant_pinned_bytes", "tenant_budget_bytes",
               "global_pinned_bytes", "global_budget_bytes")


async def _pin_budget(request: Request, exc: PinBudgetExceeded) -> JSONResponse:
    """409: the pin would pass the tenant's or the cache's pin budget. The figures (bytes) tell
    the caller how much it may still pin: unpin something, or ask the admin for a flush."""
    err = _logged(request, APIError(409, str(exc), code="pin_budget_exceeded"))
    body = shape_for(request.url.path)(err)  # the dialect's own shape, figures added
    body["error"].update({name: getattr(exc, name, None) for name in PIN_FIGURES})
    return JSONResponse(body, status_code=409)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    err = _logged(request, APIError(exc.status_code, str(exc.detail)))
    return error_response(err, headers=getattr(exc, "headers", None), path=request.url.path)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    response = _validation_response(request, exc)
    log_event(log, "error", req=request_id_of(request.scope), status=400, path=request.url.path)
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id_of(request.scope)
    log.error("unhandled error req=%s on %s", rid, request.url.path, exc_info=exc)
    return error_response(server_error(rid), path=request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(EngineInputError, _engine_input_error)
    app.add_exception_handler(PinBudgetExceeded, _pin_budget)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

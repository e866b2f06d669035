"""Anthropic's error shape: {"type": "error", "error": {"type": ..., "message": ...}}, with the
error types Anthropic's API reference assigns to each status (the official client picks its
exception class from the status and shows `error.message`)."""

from __future__ import annotations

from promptcache.server.core.status_names import StatusNames
from promptcache.server.errors import APIError

ERROR_TYPES = StatusNames({
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}, client_error="invalid_request_error", server_error="api_error")


def anthropic_error(err: APIError) -> dict:
    return {"type": "error", "error": {"type": ERROR_TYPES(err.status), "message": err.message}}

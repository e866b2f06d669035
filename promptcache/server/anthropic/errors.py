"""Anthropic's error shape: {"type": "error", "error": {"type": ..., "message": ...}}, with the
error types Anthropic's API reference assigns to each status (the official client picks its
exception class from the status and shows `error.message`)."""

from __future__ import annotations

from promptcache.server.errors import APIError

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error(err: APIError) -> dict:
    kind = ERROR_TYPES.get(err.status, "invalid_request_error" if err.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}

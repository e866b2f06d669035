"""Gemini's error shape: {"error": {"code": 404, "message": "...", "status": "NOT_FOUND"}}, with
the canonical status names Google's APIs pair with each HTTP status."""

from __future__ import annotations

from promptcache.server.core.status_names import StatusNames
from promptcache.server.errors import APIError

STATUS_NAMES = StatusNames({
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "RESOURCE_EXHAUSTED",  # a pin budget: retained KV is a quota like any other
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    503: "UNAVAILABLE",
}, client_error="INVALID_ARGUMENT", server_error="INTERNAL")


def gemini_error(err: APIError) -> dict:
    return {"error": {"code": err.status, "message": err.message, "status": STATUS_NAMES(err.status)}}

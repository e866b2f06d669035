"""Gemini's error shape: {"error": {"code": 404, "message": "...", "status": "NOT_FOUND"}}, with
the canonical status names Google's APIs pair with each HTTP status."""

from __future__ import annotations

from promptcache.server.errors import APIError

STATUS_NAMES = {
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
}


def gemini_error(err: APIError) -> dict:
    status = STATUS_NAMES.get(err.status, "INVALID_ARGUMENT" if err.status < 500 else "INTERNAL")
    return {"error": {"code": err.status, "message": err.message, "status": status}}

"""Telling the caller which request fields were ignored: never a silently ignored field.

A route calls `check_unknown(http, body, dialect)` once its body is validated. The unknown
fields' paths (core/lenient.py: sanitized, at most 16) then go into the `x-ignored-fields`
response header (streamed or not: the header leaves with the response's start), one warning
log line with the request id, and `promptcache_ignored_fields_total{dialect}`. With
`--reject-unknown-fields` they are the dialect's 400 instead, naming the first (`param` is its
path), as OpenAI's own API refuses an unrecognized argument. Keys inside free-form fields (a
tool's function object, a response format) that nothing reads are named the same way, through
`note_ignored` (server/structured/unread.py finds them).
"""

from __future__ import annotations

import logging

from fastapi import Request as HTTPRequest
from pydantic import BaseModel
from starlette.datastructures import MutableHeaders

from promptcache.server.core.lenient import MAX_NAMES, sanitized, unknown_fields
from promptcache.server.errors import bad_request
from promptcache.server.logs import log_event
from promptcache.server.request_id import request_id_of

log = logging.getLogger("promptcache.server")

HEADER = "x-ignored-fields"
IGNORED = "promptcache.ignored_fields"  # scope key: the paths the header will name


def check_unknown(http: HTTPRequest, body: BaseModel | None, dialect: str) -> None:
    """Report (or, with --reject-unknown-fields, refuse) the fields of `body` nobody reads."""
    names, count = unknown_fields(body) if body is not None else ([], 0)
    _report(http, names, count, dialect)


def note_ignored(http: HTTPRequest, paths, dialect: str) -> None:
    """Report (or refuse, as `check_unknown`) keys inside free-form fields (a tool's function,
    a response format) that nothing reads; named beside the body's own unknown fields."""
    paths = list(paths)
    _report(http, [sanitized(p) for p in paths[:MAX_NAMES]], len(paths), dialect)


def _report(http: HTTPRequest, names: list[str], count: int, dialect: str) -> None:
    if not names:
        return
    state = http.app.state.promptcache
    if state.settings.reject_unknown_fields:
        raise bad_request(f"Unrecognized request argument supplied: '{names[0]}'.", param=names[0],
                          code="unknown_parameter")
    noted = http.scope.get(IGNORED) or []
    http.scope[IGNORED] = noted + names[:MAX_NAMES - len(noted)]
    state.metrics.ignored_fields.labels(dialect).inc(count)
    log_event(log, "ignored_fields", logging.WARNING, req=request_id_of(http.scope), dialect=dialect,
              count=count, fields=",".join(names))


class IgnoredFieldsHeader:
    """Pure ASGI middleware: adds `x-ignored-fields` to a response whose route noted some.
    It must sit inside the middleware that could copy the scope, so it sees the route's note."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_names(message):
            if message["type"] == "http.response.start" and scope.get(IGNORED):
                MutableHeaders(scope=message).append(HEADER, ",".join(scope[IGNORED]))
            await send(message)

        await self.app(scope, receive, send_with_names)

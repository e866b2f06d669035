"""One id per HTTP request: in the `x-request-id` response header, in every log line about the
request, and in the message of a 5xx body, so an operator can find the log line a user quotes.

OpenAI sends the same header (its clients expose it as `_request_id`) and, like here, quotes
the id in the message of a server error rather than naming what failed inside.
"""

from __future__ import annotations

import uuid

from starlette.datastructures import MutableHeaders

REQUEST_ID = "promptcache.request_id"  # scope key


def request_id_of(scope) -> str:
    """The request's id ('req_' + 32 hex digits), made on first use."""
    rid = scope.get(REQUEST_ID)
    if rid is None:
        rid = scope[REQUEST_ID] = f"req_{uuid.uuid4().hex}"
    return rid


class RequestIds:
    """Pure ASGI middleware: gives each request its id and adds the response header."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = request_id_of(scope)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("x-request-id", rid)
            await send(message)

        await self.app(scope, receive, send_with_id)

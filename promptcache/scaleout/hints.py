"""The ids a request carries that name where its state lives: for the router's affinity.

A session id comes in the `x-session-id` header or a top-level `session_id` field; a Responses
request names its predecessor in `previous_response_id`. The routes parse bodies into their
own models and hand the engine only tokens, so this ASGI middleware looks at the body bytes
as they pass to the route (it never reads ahead, buffers nothing the route does not read, and
changes nothing), and the ingress asks for the ids when the request is submitted, after the
route has parsed and checked the body. A body without either field name is never parsed again.
"""

from __future__ import annotations

import contextvars
import json

MAX_ID_CHARS = 256
SESSION_HEADER = b"x-session-id"
_FIELDS = (b"session_id", b"previous_response_id")

_CURRENT: contextvars.ContextVar[Hints | None] = contextvars.ContextVar("promptcache_routing_hints", default=None)


def _usable(value) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS else None


class Hints:
    def __init__(self, header_session: str | None):
        self.header_session = header_session
        self.chunks: list[bytes] = []

    def ids(self) -> list[tuple[str, str]]:
        """[(kind, id)], most specific first: the session, then the previous response."""
        out = []
        body = b"".join(self.chunks)
        fields = {}
        if any(name in body for name in _FIELDS):
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                fields = parsed
        session = self.header_session or _usable(fields.get("session_id"))
        if session:
            out.append(("session", session))
        previous = _usable(fields.get("previous_response_id"))
        if previous:
            out.append(("response", previous))
        return out


def current_ids() -> list[tuple[str, str]]:
    hints = _CURRENT.get()
    return hints.ids() if hints is not None else []


class RoutingHints:
    """Pure ASGI middleware (as the server's others), so streaming and disconnects pass as is."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        header = None
        for name, value in scope.get("headers", ()):
            if name == SESSION_HEADER:
                header = _usable(value.decode("latin-1"))
        hints = Hints(header)
        token = _CURRENT.set(hints)

        async def observed():
            message = await receive()
            if message["type"] == "http.request":
                hints.chunks.append(message.get("body", b""))
            return message

        try:
            await self.app(scope, observed, send)
        finally:
            _CURRENT.reset(token)

"""The HTTP layer's own bounds, enforced in uvicorn's protocol before a request reaches the app.

uvicorn's defaults (httptools) bound none of these: a 128 MB header was parsed for 29 s of CPU
(httptools joins a header's pieces with `+=`, quadratic in their number), a connection that
never finishes its head or its body is kept forever, and nothing stops 20,000 of them from
taking every file descriptor. None of these attacks needs an API key, since the key is itself a
header. `BoundedHttpTools` adds, per connection:

- a head size cap: once the bytes read since a request began pass `max_header_bytes` and its
  head is still open, or a whole head parses to more, the answer is 431 and the connection is
  closed (the parser never sees more than one read past the cap);
- a head deadline: the head must be complete within `header_timeout_s` of the connection
  opening or the previous response ending (408, then closed);
- a body deadline: the body must be complete within `body_timeout_s` of its head (408, closed);
- a connection cap: past `max_connections`, a new connection closes the one that has been
  reading its request (or idling between requests) the longest, so slow clients cannot lock
  out a fast one; only when every connection has a request in progress is the new one refused
  (503, closed);
- a response sent before its request's body was read (a 413, a 401) closes the connection, so
  the rest of a refused body is not read.

The keep-alive timeout is uvicorn's own (`timeout_keep_alive`). Refusals are written here, in
OpenAI's error shape, since no route has been chosen yet. Limits per client address (many
connections from one host) are a reverse proxy's job (docs/security.md).
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from promptcache.server.http_limits import HttpLimits


def refusal(status: int, message: str, code: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, with an OpenAI-shaped error body."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    head += [name + b": " + value for name, value in default_headers]
    head += [b"content-type: application/json", b"content-length: " + str(len(body)).encode(), b"connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds above; `protocol_class` makes one per server."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    # Connections reading a request or idle between requests, the longest-waiting first.
    waiting: ClassVar[dict[BoundedHttpTools, None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # no head completed since the last response (or the connection opened)
        self._head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None  # decided in a parser callback, sent once the read is parsed
        self._other_bytes = 0  # bytes of bodies and of whole heads in the read being parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            victim = next(iter(self.waiting), None)
            if victim is None:
                return self._refuse(503, "The server has too many connections with requests in progress; retry "
                                    "shortly.", "too_many_connections")
            victim._close()
        self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._other_bytes = 0
        super().data_received(data)
        if self._refusal is None and self._head_open and not self.transport.is_closing():
            # The bytes of this read less the bodies and the whole heads in it (pipelining): a
            # whole head counts as parsed, a little under its bytes, so the count may run over
            # by a few bytes per header, or under by one head, never more.
            self._head_bytes += max(0, len(data) - self._other_bytes)
            if self._head_bytes > self.limits.max_header_bytes:
                self._too_large()
        if self._refusal is not None and not self.transport.is_closing():
            self.transport.write(self._refusal)
            self._close()

    def _too_large(self) -> None:
        self._refusal = self._refusal or self._response(
            431, f"The request's headers are larger than the limit of {self.limits.max_header_bytes} bytes.",
            "request_header_fields_too_large")

    def on_message_begin(self) -> None:
        if self._refusal is None:
            super().on_message_begin()
            self._head_open, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        if self._refusal is not None:
            return
        self._head_open = False
        # The head as parsed (request target and header names and values): exact where the
        # count of bytes read may include a body that arrived in the same read.
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        self._other_bytes += size
        if size > self.limits.max_header_bytes:
            return self._too_large()
        self._arm(self.limits.body_timeout_s, "body")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._other_bytes += len(body)
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusal is None:
            self._settle()
            super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            self.transport.close()  # answered before its body was read: the rest is not read
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._await_request()

    def _await_request(self) -> None:
        """The connection now waits for a request: it is a candidate for closing, and its head
        must come within the header timeout."""
        self._head_open, self._head_bytes = True, 0
        self.waiting[self] = None
        self._arm(self.limits.header_timeout_s, "head")

    def _settle(self) -> None:
        """The request is read (or the connection is gone): no deadline, not a candidate."""
        self.waiting.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _arm(self, seconds: float, part: str) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, self._timed_out, part)

    def _timed_out(self, part: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        started = self.cycle is not None and not self._head_open and self.cycle.response_started
        if part == "head" and not self._head_bytes or started:
            return self._close()  # an idle connection, or a response under way: nothing to say
        seconds = self.limits.header_timeout_s if part == "head" else self.limits.body_timeout_s
        self._refuse(408, f"The request's {part} was not received within {seconds:g} s.", "request_timeout")

    def _response(self, status: int, message: str, code: str) -> bytes:
        return refusal(status, message, code, self.server_state.default_headers)

    def _refuse(self, status: int, message: str, code: str) -> None:
        self.transport.write(self._response(status, message, code))
        self._close()

    def _close(self) -> None:
        self._settle()
        self.connections.discard(self)  # counted out now, not when the loop runs connection_lost
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() says http.disconnect
            self.cycle.message_event.set()
        self.transport.close()


def protocol_class(limits: HttpLimits) -> type[BoundedHttpTools]:
    """A protocol class for one server: its limits, and its own register of waiting connections."""
    return type("BoundedHttpTools", (BoundedHttpTools,), {"limits": limits, "waiting": {}})


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """The keyword arguments of `uvicorn.run` / `uvicorn.Config` that apply `limits`."""
    return {"http": protocol_class(limits), "timeout_keep_alive": limits.keep_alive_s}

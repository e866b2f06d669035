"""The request body's size limit, enforced before JSON parsing: 413 from `Content-Length`
alone, or as soon as a streamed (chunked) body passes the limit.

Without it a 200 MiB body was read and parsed whole (394 MiB of server memory) before anything
looked at it. Checking `Content-Length` refuses an honest oversized request without reading
it; counting while reading catches a chunked or lying one after at most the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException

from promptcache.server.errors import APIError, bad_request, error_response

TOO_LARGE = 413


class BodyLimit:
    """Pure ASGI middleware in front of the app. Routes read the body through FastAPI, which
    passes an HTTPException raised while reading it on to the app's error handlers unchanged."""

    def __init__(self, app, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"The request body is larger than the limit of {self.max_bytes} bytes."

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                err = APIError(TOO_LARGE, self._message()) if value.isdigit() else bad_request(
                    "The Content-Length header is not a number.")
                return await error_response(err, path=scope["path"])(scope, receive, send)
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(TOO_LARGE, self._message())
            return message

        await self.app(scope, counted_receive, send)

"""Checks made from a request's headers alone, before its body is read or any route runs.

Pure ASGI middleware (not BaseHTTPMiddleware, which wraps `receive` and hides client
disconnects from streaming responses). In order:

1. Host. Bound to a loopback address, only loopback Host names are accepted (plus any given
   with --allowed-host). This is the DNS-rebinding defence of Jupyter: a malicious page whose
   name re-resolves to 127.0.0.1 can reach a local server, but its requests still carry the
   page's own Host name.
2. Origin. A browser sends `Origin` with cross-site fetches; one that is neither the server's
   own origin nor allowed with --allowed-origin is refused (Ollama does the same). Without this
   any web page could drive a local, keyless server.
3. Content type. POST bodies must be `application/json`: a browser can send text/plain or a
   form cross-site without a CORS preflight, but never JSON.
4. Who is calling. The API key is checked here, so a wrong or missing key gets its 401 before
   a byte of a possibly huge body is read (a 200 MiB body once took 6.6 s to be refused).
   OpenAI's clients send it as `Authorization: Bearer KEY`, Anthropic's as `x-api-key: KEY`,
   Gemini's as `x-goog-api-key: KEY`; all name the same key ring, so a key is the same tenant
   in every dialect.
   The `Caller` is left in the scope for the routes, which decide what it may do.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from starlette.datastructures import Headers

from promptcache.server.errors import APIError, error_response, unauthorized
from promptcache.server.logs import log_event
from promptcache.server.request_id import request_id_of
from promptcache.server.tenants import Caller, KeyRing

log = logging.getLogger("promptcache.server")

CALLER = "promptcache.caller"  # scope key of the authenticated Caller
# Answered without a key: liveness and the API's own description.
PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
JSON_TYPES = frozenset({"application/json"})


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """'Example.com:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(p == "*" or p == name or (p.startswith("*.") and name.endswith(p[1:])) for p in patterns)


class RequestGuard:
    def __init__(
        self,
        app,
        *,
        keys: KeyRing,
        bind_host: str,
        allowed_hosts: tuple[str, ...] = (),
        allowed_origins: tuple[str, ...] = (),
        metrics_public: bool = False,
    ):
        self.app = app
        self.keys = keys
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)
        self.allowed_origins = tuple(o.rstrip("/").lower() for o in allowed_origins)
        # Host names are checked when bound to loopback, or when the operator listed some.
        self.check_host = is_loopback(bind_host) or bool(allowed_hosts)
        self.public = PUBLIC_PATHS | ({"/metrics"} if metrics_public else set())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        try:
            self._check_host(headers)
            self._check_origin(headers)
            if scope["method"] == "POST":
                self._check_content_type(headers)
            if scope["path"] not in self.public:
                scope[CALLER] = self._caller(headers)
        except APIError as err:
            log_event(log, "refused", req=request_id_of(scope), status=err.status, code=err.code,
                      path=scope["path"])
            return await error_response(err, path=scope["path"])(scope, receive, send)
        await self.app(scope, receive, send)

    def _check_host(self, headers: Headers) -> None:
        if not self.check_host:
            return
        name = host_name(headers.get("host", ""))
        if not (is_loopback(name) or _matches(name, self.allowed_hosts)):
            raise APIError(403, "This Host name is not allowed (see --allowed-host).", code="host_not_allowed")

    def _check_origin(self, headers: Headers) -> None:
        origin = headers.get("origin")
        if origin is None:
            return  # not a browser's cross-site request
        origin = origin.rstrip("/").lower()
        if _matches(origin, self.allowed_origins):
            return
        if urlsplit(origin).netloc == headers.get("host", "").lower():
            return  # same origin: e.g. the server's own /docs page
        raise APIError(403, "Requests from this Origin are not allowed (see --allowed-origin).",
                       code="origin_not_allowed")

    def _check_content_type(self, headers: Headers) -> None:
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type not in JSON_TYPES:
            raise APIError(415, "Send the request body as JSON with 'Content-Type: application/json'.",
                           code="unsupported_media_type")

    def _caller(self, headers: Headers) -> Caller:
        authorization = headers.get("authorization")
        if authorization is None and (api_key := headers.get("x-api-key") or headers.get("x-goog-api-key")):
            authorization = f"Bearer {api_key}"
        caller = self.keys.identify(authorization)
        if caller is None:
            if authorization is None:
                raise unauthorized("You didn't provide an API key (Authorization: Bearer KEY or x-api-key).")
            raise unauthorized()
        return caller
